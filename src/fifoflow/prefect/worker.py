"""``PrefectWorker``: the worker as a Prefect parent flow run, every job a child of it.

It keeps the whole worker (greedy slots, report and claim in one round trip, leases,
timeouts, graceful stop) and changes one thing, how a job's function is called
(``Worker.call``). Its ``run`` enters a flow run, the *dispatcher* (flow
``fifoflow-dispatcher``, run ``fifoflow-dispatcher/QUEUES[POOLS]``), and every attempt of
every job runs as a child flow run of that dispatcher (``children``), with the job's
params as its parameters.

Slot threads start with empty context variables, so the dispatcher captures its own
context once (``contextvars.copy_context()``) and each attempt runs in a fresh copy of it:
the child finds the dispatcher's ``FlowRunContext`` and no ``TaskRunContext``. No task sits
between the two, which keeps each child's logs and prints on the child's own run (a
subflow called from inside a task logs onto that task, PrefectHQ/prefect#19449).

A child that ends Failed or Crashed is a failed attempt (retried with fifoflow's back-off);
one cancelled (from fifoflow or Prefect) makes the job cancelled; its run id is recorded on
the job. ``deployment``: jobs as deployment runs. ``processes=True``: each slot's attempts
in a process of its own (``procchild``, ``hooks``); ``run_name``: child run names.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, SyncClientContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogWorker
from prefect.settings import temporary_settings
from prefect.states import Cancelled, Cancelling, Crashed

from ..allowlist import Resolver
from ..execution import Cancelled as JobCancelled
from ..execution import JobInfo, Runner, run_as, timeout_starts_now
from ..procslot import Setup
from ..records import Claimed, Outcome
from ..worker import Worker
from .attempts import Attempts, child_tags
from .cancels import PrefectCancelWatch
from .client import api_client, patient_startup, quick_retry
from .deployment import START_TIMEOUT, DeploymentRuns
from .gate import ApiGate
from .hooks import emit_final, note_attempt, stop_process_run, watch_runs
from .hooks import process_setup as child_setup
from .runname import RunName
from .summary import Summary

log = logging.getLogger("fifoflow.prefect")

#: Flow name of the parent run every worker enters.
DISPATCHER_FLOW = "fifoflow-dispatcher"


class PrefectWorker(Worker):
    """A ``Worker`` that runs as a Prefect parent flow, each job a child flow run of it.

    Same constructor as ``Worker``; ``run(burst=False)`` returns like it. Works against
    any Prefect API: a server (``PREFECT_API_URL``) or, with none set, Prefect's local
    ephemeral API on the SQLite database in ``PREFECT_HOME``. With ``deployment``
    (``FLOW/DEPLOYMENT``) each job runs as a flow run of that deployment on its work pool
    (``work_queue``: one of the pool's queues) instead of in this process (``deployment``).
    ``run_name``: a template over the job's params naming its child runs, such as
    ``"lr={lr}-bs={batch_size}"``; ``events``: emit each job's lifecycle as Prefect events.
    """

    supports_processes = True  #: ``processes=True``: each slot's children in its own process

    #: Prefect flow run heartbeats for children. Off: they only matter to detect crashed
    #: runs of deployments, and in Prefect 3.8/3.9 each run with heartbeats spends up to a
    #: second joining its heartbeat thread when it ends. The dispatcher keeps its own.
    child_heartbeats: bool = False
    summary_rows: int = 1000  # jobs kept in the summary artifact (the most recent ones)
    summary_interval: float = 60.0  # seconds between re-publications of the summary
    call_starts_clock = True  # a thread slot's timeout starts once the child run exists

    def __init__(
        self,
        *args: Any,
        deployment: str | None = None,
        work_queue: str | None = None,
        start_timeout: float = START_TIMEOUT,
        run_name: str | None = None,
        events: bool = True,
        **kwargs: Any,
    ) -> None:
        #: The checked ``--run-name`` template (a bad one is refused before anything runs).
        self.run_name_template = RunName(run_name) if run_name is not None else None
        self.events = events
        self._deployment = (
            None
            if deployment is None
            else DeploymentRuns(self, deployment, work_queue, start_timeout)
        )
        super().__init__(*args, **kwargs)
        self.services.append(PrefectCancelWatch(self))
        self._parent_ctx: contextvars.Context | None = None
        self._attempts: Attempts | None = None
        self._summary = Summary(
            self.name, list(self.queues), self.summary_rows, self.summary_interval
        )
        self._api: SyncPrefectClient | None = None
        self.gate: ApiGate | None = None  # how many requests go to the API at once
        self._active: dict[str, JobInfo] = {}  # child flow run id -> its job, while it runs
        self._active_lock = threading.Lock()
        #: The dispatcher's flow run id, once ``run`` has entered it.
        self.flow_run_id: str | None = None
        #: ``time.monotonic()`` when the dispatcher flow run began (the API was up by then).
        self.dispatch_started: float | None = None

    @property
    def run_name(self) -> str:
        """``fifoflow-dispatcher/QUEUE,...[POOL,...]``: the dispatcher's flow run name."""
        return f"{DISPATCHER_FLOW}/{','.join(self.queues)}[{','.join(self.pools)}]"

    def summary(self) -> list[dict[str, Any]]:
        """The rows of the summary artifact: one per job, its latest attempt."""
        return self._summary.rows()

    # -- the parent flow ----------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work as the dispatcher flow run until stopped (or drained, with ``burst``)."""
        if self._deployment is not None:  # fail fast, before any job is claimed
            with patient_startup(), api_client() as client:
                self._deployment.resolve(client)
        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow is not None and ctx.flow.name == DISPATCHER_FLOW:
            return self._dispatch_as_flow(burst)  # a deployed dispatcher: already its run
        worker = self

        def dispatcher(
            worker_name: str,
            queues: list[str],
            pools: list[str],
            modules: list[str],
            concurrency: int,
            burst: bool,
        ) -> int:
            return worker._dispatch_as_flow(burst)

        flow = Flow(
            fn=dispatcher,
            name=DISPATCHER_FLOW,
            flow_run_name=self.run_name,
            description="A fifoflow worker: each job it runs is a child flow run of this one.",
            log_prints=True,
            validate_parameters=False,
        )
        with patient_startup():
            result = flow(
                worker_name=self.name,
                queues=list(self.queues),
                pools=list(self.pools),
                modules=list(self.modules),
                concurrency=self.concurrency,
                burst=burst,
            )
        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=5)
        return int(result)

    def _dispatch_as_flow(self, burst: bool) -> int:
        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:  # pragma: no cover - Prefect guarantees it
            raise RuntimeError("the dispatcher flow has no flow run context")
        self.flow_run_id = str(ctx.flow_run.id)
        self.dispatch_started = time.monotonic()
        beats = None if self.child_heartbeats else {"flows.heartbeat_frequency": None}
        with temporary_settings(updates=beats):
            self._parent_ctx = contextvars.copy_context()
        # One client (and pool) for all: the one the engine runs children with (copied context).
        engine = SyncClientContext.get()
        own = api_client() if engine is None else contextlib.nullcontext(engine.client)
        with own as client:
            slots = self.concurrency + 1  # and the dispatcher's own requests
            self.gate = ApiGate.for_api(self.settings.home, str(client.api_url), slots)
            self._api = quick_retry(client, self.gate)
            self._attempts = Attempts(
                self._api, self.flow_run_id, self.name, self.run_name_template, self.events
            )
            try:
                return Worker.run(self, burst)
            finally:
                self._crash_abandoned()
                self._summary.publish(final=True)
                self._parent_ctx = None

    def _crash_abandoned(self) -> None:
        """Children still running when the worker is done were abandoned (a timeout, or the
        grace period ran out and their jobs went back in line): say so on their runs, which
        would otherwise show Running for ever."""
        for run_id, job in self.active_children().items():
            job_id = job.id
            self._summary.mark(job_id, run_id, "Crashed")
            message = (
                f"abandoned by fifoflow worker {self.name}: job {job_id} timed out or was "
                "put back in line when the worker stopped"
            )
            try:
                if self._api is not None:
                    self._api.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)
            except Exception as e:
                log.warning(
                    "worker %s: could not mark flow run %s crashed: %s", self.name, run_id, e
                )

    @property
    def api(self) -> SyncPrefectClient | None:
        """The dispatcher's API client while it runs."""
        return self._api

    def active_children(self) -> dict[str, JobInfo]:
        """Local child runs (thread or process slots) going on now: run id -> job."""
        with self._active_lock:
            return dict(self._active)

    def child_tags(self, job: JobInfo) -> list[str]:
        return child_tags(job)

    def mark_cancelled(self, job: JobInfo) -> None:
        """A job's run was cancelled in Prefect: the job is cancelled (never retried)."""
        if self.processes:
            return stop_process_run(self, job)
        job.cancel_event.set()
        self.retry.once(lambda: self.broker.cancel(job.queue, job.id))

    def cancelling(self, job_id: str) -> None:
        """``fifoflow cancel`` of a running job: its child run is set Cancelling (a
        deployment run's slot does that itself, and Prefect's worker stops the run)."""
        client = self._api
        runs = [UUID(r) for r, job in self.active_children().items() if job.id == job_id]
        if client is None or not runs:
            return
        cancelling: State[Any] = Cancelling(message="cancelled with fifoflow cancel")
        self.quietly(lambda: client.set_flow_run_state(runs[0], cancelling))

    def stop(self) -> None:
        """As ``Worker.stop``, and said on the dispatcher's run (the UI shows the drain)."""
        parent = self._parent_ctx
        if not self.stopping.is_set() and parent is not None:
            line = f"worker {self.name}: stopping; no new claims, running jobs get {self.grace:g}s"
            with contextlib.suppress(Exception):
                parent.copy().run(lambda: get_run_logger().warning(line))
        super().stop()

    def quietly(self, call: Callable[[], Any]) -> None:
        """An API call whose failure is only worth a warning."""
        try:
            call()
        except Exception as e:
            log.warning("worker %s: Prefect API call failed: %s", self.name, e)

    def note_done(
        self, job: JobInfo, params: dict[str, Any], state: str, duration: float, run_id: str
    ) -> None:
        self._summary.note(job, params, state, duration, run_id)
        self._log_to_dispatcher(job, state, duration, run_id)

    # -- one job, one child flow run ----------------------------------------------------

    def make_runner(self, resolver: Resolver) -> Runner:
        return watch_runs(self, super().make_runner(resolver))

    def process_setup(self) -> Setup:
        return child_setup(self)

    def attempt_done(self, job: Claimed, outcome: Outcome, duration: float) -> None:
        note_attempt(self, job, outcome, duration)

    def attempt_reported(self, job: Claimed, outcome: Outcome, result: str) -> None:
        emit_final(self, job, outcome, result)

    def call(
        self, job: JobInfo, fn: Callable[..., Any], kwargs: dict[str, Any], extra: dict[str, str]
    ) -> Any:
        """Run one attempt as a child flow run; its id goes into ``extra``."""
        parent = self._parent_ctx
        if parent is None:
            raise RuntimeError("PrefectWorker runs jobs only inside PrefectWorker.run")
        # A fresh copy per attempt: a Context cannot be entered by two threads at once.
        return parent.copy().run(run_as, job, self._run_child, job, fn, kwargs, extra)

    def _run_child(
        self, job: JobInfo, fn: Callable[..., Any], params: dict[str, Any], extra: dict[str, str]
    ) -> Any:
        client, attempts = self._api, self._attempts
        if client is None or attempts is None:  # pragma: no cover - set by run()
            raise RuntimeError("the dispatcher has no API client")
        if self._deployment is not None:
            timeout_starts_now()  # the run's own waits (start timeout, job timeout) follow
            return self._deployment.run(client, job, params, extra)
        started = time.monotonic()
        child = attempts.create(job, fn, params)
        timeout_starts_now()  # the job's own time starts with its child run
        run_id = child.run_id
        extra["flow_run_id"] = run_id
        with self._active_lock:
            self._active[run_id] = job
        self._summary.note(job, params, "Running", 0.0, run_id, final=False)
        try:
            state = attempts.run(job, child)
        except Exception:
            self._summary.note(job, params, "Crashed", time.monotonic() - started, run_id)
            raise
        finally:
            with self._active_lock:
                self._active.pop(run_id, None)
        duration = time.monotonic() - started
        self.note_done(job, params, str(state.name), duration, run_id)
        if state.is_completed():
            return state.result()
        if job.cancelled or state.is_cancelled() or state.is_cancelling():
            # In-process runs have no infrastructure for Prefect to stop: the target saw
            # current_job().cancelled; the run ends Cancelled, the job cancelled.
            if not job.cancelled:
                self.mark_cancelled(job)
            if not state.is_cancelled():
                done: State[Any] = Cancelled(message=f"job {job.id} was cancelled")
                self.quietly(lambda: client.set_flow_run_state(child.run.id, done, force=True))
            raise JobCancelled(f"child flow run {run_id} was cancelled")
        return attempts.outcome(state, run_id)

    def _log_to_dispatcher(self, job: JobInfo, state: str, duration: float, run_id: str) -> None:
        # In the dispatcher's context: this line lands on the dispatcher's own run.
        parent = self._parent_ctx
        if FlowRunContext.get() is None and parent is not None:  # a process slot's thread
            parent.copy().run(self._log_to_dispatcher, job, state, duration, run_id)
            return
        with contextlib.suppress(Exception):
            get_run_logger().info(
                "job %s %s attempt %d: %s in %.2fs (flow run %s)",
                job.id,
                job.target,
                job.attempt,
                state,
                duration,
                run_id,
            )
