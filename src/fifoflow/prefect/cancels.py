"""Cancels that come from Prefect (the UI, the API, ``prefect flow-run cancel``).

``PrefectCancelWatch`` is one more worker service. Every ``INTERVAL`` seconds it asks the
API, in one call, which of these runs are Cancelling or Cancelled:

* the child runs this worker runs itself (local mode): such a job is marked cancelled on
  the fifoflow server (``Queue.cancel``). In a thread slot its target sees
  ``current_job().cancelled`` (a thread cannot be stopped from outside; the child run is
  set Cancelled when its attempt ends); a process slot's process is stopped as for
  ``fifoflow cancel`` (SIGTERM, then SIGKILL) and the dispatcher sets the run Cancelled
  (``hooks``). Either way the job is recorded cancelled, never retried;
* the dispatcher's own flow run: a cancel of the dispatcher (for example a deployed one,
  ``fifoflow deploy``) drains the worker like SIGTERM: no new claims, running jobs get the
  grace period, the rest go back in line.

Deployment-mode runs are watched by their own slots (``deployment``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from uuid import UUID

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

if TYPE_CHECKING:
    from .worker import PrefectWorker

log = logging.getLogger("fifoflow.prefect")

#: Seconds between two looks.
INTERVAL = 1.0
CANCEL_TYPES = [StateType.CANCELLING, StateType.CANCELLED]


class PrefectCancelWatch:
    name = "fifoflow-prefect-cancels"

    def __init__(self, worker: PrefectWorker) -> None:
        self.w = worker

    def run(self) -> None:
        w = self.w
        while not w.stopping.wait(INTERVAL):
            self.look()

    def look(self) -> None:
        w = self.w
        client = w.api
        if client is None or w.flow_run_id is None:
            return
        active = w.active_children()
        ids = [UUID(w.flow_run_id), *(UUID(r) for r in active)]
        try:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=ids),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=CANCEL_TYPES)),
                ),
                limit=len(ids),
            )
        except Exception as e:  # the API is down for a moment: look again later
            log.debug("worker %s: could not read child run states: %s", w.name, e)
            return
        for run in runs:
            run_id = str(run.id)
            if run_id == w.flow_run_id:
                if not w.stopping.is_set():
                    log.warning(
                        "worker %s: its dispatcher flow run was cancelled in Prefect; draining",
                        w.name,
                    )
                    w.stop()
                continue
            job = active.get(run_id)
            if job is not None and not job.cancelled:
                log.warning(
                    "worker %s: child flow run %s of job %s was cancelled in Prefect",
                    w.name,
                    run_id,
                    job.id,
                )
                w.mark_cancelled(job)
