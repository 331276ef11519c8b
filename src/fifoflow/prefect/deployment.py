"""Deployment mode: each job becomes a flow run of an existing Prefect deployment.

``fifoflow worker MODULE --prefect --deployment FLOW/DEPLOYMENT`` keeps fifoflow's slots,
leases and retries, and hands the work itself to a Prefect work pool: an attempt creates a
flow run of the deployment (``create_flow_run_from_deployment``) with the job's params, as
a child of the dispatcher's run, and its slot stays busy (its lease heartbeated) until the
run reaches a final state. Then:

* ``Completed``: succeeded, with the run's result if it was persisted (and is JSON), else
  the run's id;
* ``Failed`` / ``Crashed``: a failed attempt (fifoflow retries it, or it goes dead);
* ``Cancelled`` (or ``Cancelling``), from fifoflow or from Prefect: cancelled, never retried;
* still ``Scheduled`` / ``Pending`` after ``start_timeout`` seconds (no pool worker took it):
  the run is cancelled and the attempt fails with a clear reason.

Every run carries the tag ``fifoflow-job:ID``. A job redelivered after its worker died
first *adopts* the newest run of that job that is still going (or that completed or was
cancelled meanwhile) instead of starting a second one; the idempotency key
``fifoflow/QUEUE/ID/tryN`` makes a re-sent create return the same run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from prefect import Task
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling, Pending

from ..errors import FifoflowError, UsageError
from ..execution import Cancelled as JobCancelled
from ..execution import JobInfo
from .children import ChildRunFailed

if TYPE_CHECKING:
    from .worker import PrefectWorker

log = logging.getLogger("fifoflow.prefect")

#: Seconds between two looks at a deployment run's state.
POLL = 0.5
#: Default seconds a run may stay Scheduled or Pending before the attempt fails.
START_TIMEOUT = 300.0
#: Seconds a run may stay Cancelling (its infrastructure being torn down) before the
#: attempt ends cancelled anyway.
CANCELLING_WAIT = 60.0
WAITING_TYPES = (StateType.SCHEDULED, StateType.PENDING)
#: Seconds the API may stay unreachable while a run is watched before the attempt fails
#: (the retry then adopts the run, should it still go).
API_PATIENCE = 120.0
#: How the message of a run cancelled for its start timeout begins.
START_TIMEOUT_MARK = "start timeout: "


class StartTimeout(RuntimeError):
    """No pool worker started the deployment run in time."""


def job_tag(job_id: str) -> str:
    return f"fifoflow-job:{job_id}"


def check_name(name: str) -> str:
    flow, sep, deployment = name.partition("/")
    if not (sep and flow.strip() and deployment.strip()) or "/" in deployment:
        raise UsageError(f"--deployment must be FLOW/DEPLOYMENT, not {name!r}")
    return name


class DeploymentRuns:
    """Runs jobs of one worker as flow runs of one deployment."""

    def __init__(
        self, worker: PrefectWorker, name: str, work_queue: str | None, start_timeout: float
    ) -> None:
        if not start_timeout > 0:  # NaN too
            raise UsageError(f"--start-timeout must be a positive number, not {start_timeout!r}")
        self.w = worker
        self.name = check_name(name)
        self.work_queue = work_queue
        self.start_timeout = start_timeout
        self.deployment_id: UUID | None = None
        self.tracking: Task[..., Any] = Task(name=name.split("/")[0], fn=_tracking)
        self._runs: dict[str, str] = {}  # job id -> its deployment run, while it runs
        self._lock = threading.Lock()
        self._unreachable: dict[UUID, float] = {}  # run id -> since when its reads fail

    def resolve(self, client: SyncPrefectClient) -> None:
        """The deployment must exist before any job is claimed."""
        try:
            self.deployment_id = client.read_deployment_by_name(self.name).id
        except ObjectNotFound:
            raise UsageError(f"no Prefect deployment {self.name!r} on the Prefect API") from None
        except httpx.HTTPError as e:
            raise FifoflowError(f"cannot reach the Prefect API: {e}") from None

    def run_of(self, job_id: str) -> str | None:
        with self._lock:
            return self._runs.get(job_id)

    # -- one attempt -------------------------------------------------------------------

    def run(
        self, client: SyncPrefectClient, job: JobInfo, params: dict[str, Any], extra: dict[str, str]
    ) -> Any:
        run = self._adopt(client, job) if job.attempt > 1 else None
        task_run_id: UUID | None = None
        if run is None:
            run, task_run_id = self._create(client, job, params)
        else:
            log.info("job %s: adopting flow run %s (%s)", job.id, run.id, run.state_name)
        run_id = str(run.id)
        extra["flow_run_id"] = run_id
        with self._lock:
            self._runs[job.id] = run_id
        started = time.monotonic()
        try:
            final = self._wait(client, job, run)
        finally:
            with self._lock:
                self._runs.pop(job.id, None)
        state = final.state
        assert state is not None
        duration = time.monotonic() - started
        self.w.note_done(job, params, str(state.name), duration, run_id)
        if task_run_id is not None:  # the tracking task run in the dispatcher mirrors it
            mirror = State(type=state.type, name=state.name, message=state.message)
            self.w.quietly(lambda: client.set_task_run_state(task_run_id, mirror, force=True))
        if state.is_completed():
            return _result(state, run_id)
        if state.type in (StateType.CANCELLED, StateType.CANCELLING):
            if not job.cancelled:  # from Prefect (the UI, the API): the job is cancelled too
                self.w.mark_cancelled(job)
            raise JobCancelled(f"flow run {run_id} was cancelled: {state.message or state.name}")
        raise ChildRunFailed(
            f"flow run {run_id} of {self.name} ended {state.name}: {state.message or ''}".rstrip()
        )

    def _create(
        self, client: SyncPrefectClient, job: JobInfo, params: dict[str, Any]
    ) -> tuple[FlowRun, UUID | None]:
        assert self.deployment_id is not None
        tags = [*self.w.child_tags(job), job_tag(job.id)]
        task_run_id: UUID | None = None
        if self.w.flow_run_id is not None:
            task_run = client.create_task_run(
                task=self.tracking,
                flow_run_id=UUID(self.w.flow_run_id),
                dynamic_key=f"{job.id}-try{job.attempt}",
                name=f"{self.tracking.name}-{job.id}-try{job.attempt}",
                extra_tags=tags,
                state=Pending(),
                task_inputs={},
            )
            task_run_id = task_run.id
        run = client.create_flow_run_from_deployment(
            self.deployment_id,
            parameters=params,
            name=f"{job.id}-try{job.attempt}",
            tags=tags,
            idempotency_key=f"fifoflow/{job.queue}/{job.id}/try{job.attempt}",
            parent_task_run_id=task_run_id,
            work_queue_name=self.work_queue,
        )
        return run, task_run_id

    def _adopt(self, client: SyncPrefectClient, job: JobInfo) -> FlowRun | None:
        """A redelivered job's newest run, if it still goes (or completed, or was
        cancelled, while nobody watched): then it is this attempt's run."""
        assert self.deployment_id is not None
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[job_tag(job.id)]),
                deployment_id=FlowRunFilterDeploymentId(any_=[self.deployment_id]),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=20,
        )
        going = [r for r in runs if r.state is not None and not r.state.is_final()]
        if going:
            return going[0]
        last = runs[0].state if runs else None
        if last is None or (last.message or "").startswith(START_TIMEOUT_MARK):
            return None  # a run this worker gave up on is nobody's run
        return runs[0] if last.is_completed() or last.is_cancelled() else None

    def _wait(self, client: SyncPrefectClient, job: JobInfo, run: FlowRun) -> FlowRun:
        """Until the run is final; cancels it on a fifoflow cancel, a start timeout or the
        job's own timeout."""
        started = time.monotonic()
        deadline = started + job.timeout if job.timeout else None
        asked: float | None = None  # when a cancel was asked (or seen)
        run_id = run.id
        while True:
            state = run.state
            if state is not None and state.is_final():
                return run
            now = time.monotonic()
            if self.w.stopped.is_set():
                # The worker is gone and the job back in line: its next owner adopts the run.
                raise ChildRunFailed(f"flow run {run_id} left running: the worker stopped")
            if state is not None and state.is_cancelling():
                if asked is None:
                    asked = now
                    if not job.cancelled:
                        self.w.mark_cancelled(job)
                if now - asked > CANCELLING_WAIT:
                    return run  # Cancelling for too long: the job is cancelled anyway
            elif job.cancelled and asked is None:
                asked = now
                self._cancel(client, run_id, "cancelled with fifoflow cancel")
            waiting = state is not None and state.type in WAITING_TYPES and asked is None
            if waiting and now - started > self.start_timeout:
                self._start_timed_out(client, run_id, str(state.name if state else ""))
            if deadline is not None and now > deadline and asked is None:
                asked = now
                self._cancel(client, run_id, f"the job's timeout ({job.timeout:g}s) ran out")
            if not job.cancelled:
                job.cancel_event.wait(POLL)  # a fifoflow cancel ends the wait at once
            elif asked is not None:
                time.sleep(POLL)
            run = self._read(client, run, now)

    def _read(self, client: SyncPrefectClient, run: FlowRun, now: float) -> FlowRun:
        """The run afresh; while the API is unreachable (up to ``API_PATIENCE`` seconds)
        the last known run, so that a short outage does not fail the attempt."""
        try:
            fresh = client.read_flow_run(run.id)
        except (httpx.HTTPError, OSError) as e:
            since = self._unreachable.setdefault(run.id, now)
            if now - since > API_PATIENCE:
                self._unreachable.pop(run.id, None)
                raise ChildRunFailed(
                    f"the Prefect API was unreachable for {API_PATIENCE:g}s while watching "
                    f"flow run {run.id}: {e}"
                ) from None
            log.warning("flow run %s: cannot read its state (%s); trying again", run.id, e)
            return run
        self._unreachable.pop(run.id, None)
        return fresh

    def _start_timed_out(self, client: SyncPrefectClient, run_id: UUID, state: str) -> None:
        reason = (
            f"{START_TIMEOUT_MARK}flow run {run_id} of {self.name} was not started within "
            f"{self.start_timeout:g}s (still {state}): no worker of its work pool picked it up"
        )
        # Cancelled, so that a pool worker that turns up later does not start it after all.
        done: State[Any] = Cancelled(message=reason)
        self.w.quietly(lambda: client.set_flow_run_state(run_id, done, force=True))
        raise StartTimeout(reason)

    def _cancel(self, client: SyncPrefectClient, run_id: UUID, why: str) -> None:
        log.info("flow run %s: cancelling (%s)", run_id, why)
        self.w.quietly(lambda: client.set_flow_run_state(run_id, Cancelling(message=why)))


def _tracking() -> None:
    """The body of the tracking task (never called: Prefect only records its runs)."""


def _result(state: State[Any], run_id: str) -> Any:
    """The run's persisted result when it can be read and is JSON, else its id."""
    try:
        value = state.result(raise_on_failure=False)
        if isinstance(value, BaseException | State):
            return run_id
        json.dumps(value, allow_nan=False)
        return value
    except Exception:
        return run_id
