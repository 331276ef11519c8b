"""A job's lifecycle as Prefect events on its child flow run, for Automations and the feed.

Each attempt's flow run (resource ``prefect.flow-run.ID``) gets:

* ``fifoflow.job.queued``: when the run is created, dated when the job last entered the
  line (so the feed shows its wait);
* ``fifoflow.job.started``: just before the run starts;
* one of ``fifoflow.job.succeeded``, ``fifoflow.job.retried`` (it goes back in line for
  another attempt, which gets its own run), ``fifoflow.job.dead`` or
  ``fifoflow.job.cancelled``: once the attempt's outcome is recorded.

Related resources name the job (``fifoflow.job.QUEUE.ID``, role ``fifoflow-job``), its
queue (``fifoflow.queue.QUEUE``, the resource of ``fifoflow monitor --prefect-events``) and
the dispatcher's flow run (role ``dispatcher``). Events go through Prefect's own batching
events worker, off the slot's path; a failure to send never fails a job.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

log = logging.getLogger("fifoflow.prefect")

PREFIX = "fifoflow.job."
#: The report's outcome -> the event's last word.
FINAL = {"succeeded": "succeeded", "retry": "retried", "dead": "dead", "cancelled": "cancelled"}


def emit_job_event(
    what: str,
    run_id: str,
    *,
    job_id: str,
    queue: str,
    target: str,
    attempt: int,
    dispatcher_run_id: str | None,
    worker: str,
    occurred: float | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Emit ``fifoflow.job.WHAT`` on flow run ``run_id`` (never raises)."""
    try:
        from prefect.events import emit_event

        related = [
            {
                "prefect.resource.id": f"fifoflow.job.{queue}.{job_id}",
                "prefect.resource.role": "fifoflow-job",
                "prefect.resource.name": job_id,
            },
            {
                "prefect.resource.id": f"fifoflow.queue.{queue}",
                "prefect.resource.role": "fifoflow-queue",
                "prefect.resource.name": queue,
            },
        ]
        if dispatcher_run_id:
            related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{dispatcher_run_id}",
                    "prefect.resource.role": "dispatcher",
                }
            )
        body = {"job": job_id, "queue": queue, "target": target, "attempt": attempt}
        body["worker"] = worker
        when = (
            None if occurred is None else datetime.datetime.fromtimestamp(occurred, tz=datetime.UTC)
        )
        emit_event(
            event=PREFIX + what,
            resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
            related=related,
            payload={**body, **(payload or {})},
            occurred=when,
        )
    except Exception as e:  # events are a view: never a reason for a job to fail
        log.warning("could not emit %s%s for job %s: %s", PREFIX, what, job_id, e)
