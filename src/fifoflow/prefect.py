"""Prefect mode: the worker is a Prefect parent flow run, every job a child flow run of it.

``PrefectWorker`` keeps the whole worker (greedy slot threads, claim and ack in one round
trip, leases, timeouts, graceful stop) and changes one thing: how a job is called. Its
``run`` enters a Prefect flow run, the *dispatcher* (flow ``fifoflow-dispatcher``, run
``fifoflow-dispatcher/QUEUES[POOLS]``), and every attempt of every job runs as a child flow
run of that dispatcher, with the job's params as the child's parameters:

* a target that is a Prefect ``@flow`` runs as itself (its retries, task runner, hooks,
  result settings and ``log_prints`` all apply);
* a Prefect ``@task`` runs inside a child flow named after the task;
* a plain function runs as a child flow named after it, with ``log_prints=True``.

How the children become children: Prefect records a subflow as a flow run whose
``parent_task_run_id`` points at a "tracking" task run of the parent flow run, and it
creates both when a flow is called while a ``FlowRunContext`` is current. Slot threads start
with empty context variables, so the dispatcher captures its own context once
(``contextvars.copy_context()``) and each attempt runs in a fresh copy of it
(``Context.copy().run``): the child finds the dispatcher's ``FlowRunContext`` and no
``TaskRunContext``. No task or task runner sits between the two, which is what keeps each
child's logs and prints on the child's own run (a subflow called from inside a task logs
onto that task, PrefectHQ/prefect#19449).

A child that ends Failed, Crashed or Cancelled raises, so fifoflow counts the attempt as
failed and retries it with its own back-off; the child's flow run id is stored on the job
record (``flow_run_id``) whatever the outcome. The dispatcher publishes a table artifact of
what it ran (at the end, and every ``summary_interval`` seconds while it works).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .queue import Claimed
from .worker import Worker

try:
    import prefect
    from prefect import Flow, Task
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger
    from prefect.settings import temporary_settings
except ImportError as e:  # pragma: no cover - depends on the install
    raise UsageError(
        f"Prefect mode needs Prefect ({e}); install it with: pip install 'fifoflow[prefect]'"
    ) from None

log = logging.getLogger(__name__)

#: Flow name of the parent run every worker enters.
DISPATCHER_FLOW = "fifoflow-dispatcher"
#: Tags put on every child flow run (and the tasks inside it).
CHILD_TAG = "fifoflow"


@dataclass(frozen=True)
class JobInfo:
    """The fifoflow job a child flow run is running for (see ``current_job``)."""

    id: str
    queue: str
    target: str
    attempt: int


_current_job: contextvars.ContextVar[JobInfo | None] = contextvars.ContextVar(
    "fifoflow_current_job", default=None
)


def current_job() -> JobInfo | None:
    """The job being run, from inside a child flow run of a ``PrefectWorker`` (else None).

    ``attempt`` starts at 1 and grows with each of fifoflow's retries; Prefect's own flow
    retries inside one attempt show in ``prefect.runtime.flow_run.run_count`` instead.
    """
    return _current_job.get()


def _child_run_name() -> str:
    info = _current_job.get()
    return f"{info.id}-try{info.attempt}" if info else "fifoflow-job"


class ChildRunFailed(RuntimeError):
    """A child flow run ended in a non-completed state without an exception to re-raise."""


def _with_extra(exc: BaseException, extra: tuple[str, str]) -> BaseException:
    """Attach the child flow run id where the worker looks for it (``fifoflow_extra``)."""
    try:
        exc.fifoflow_extra = extra  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - exceptions with __slots__
        wrapped = ChildRunFailed(f"{type(exc).__name__}: {exc}")
        wrapped.fifoflow_extra = extra  # type: ignore[attr-defined]
        return wrapped
    return exc


def _artifact_key(queues: list[str]) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(queues).lower()).strip("-") or "queue"
    return f"fifoflow-{slug}"[:100].rstrip("-")


class PrefectWorker(Worker):
    """A ``Worker`` that runs as a Prefect parent flow, each job a child flow run of it.

    Same constructor as ``Worker``; ``run(burst=False)`` returns 0 like it. Works against
    any Prefect API: a server (``PREFECT_API_URL``) or, with none set, Prefect's local
    ephemeral API on the SQLite database in ``PREFECT_HOME``.
    """

    #: Prefect flow run heartbeats for children. Off: they only matter to detect crashed
    #: runs of deployments, and in Prefect 3.8/3.9 each run with heartbeats spends up to a
    #: second joining its heartbeat thread when it ends. The dispatcher keeps its own.
    child_heartbeats: bool = False
    #: Jobs kept in the summary artifact (the most recent ones).
    summary_rows: int = 1000
    #: Seconds between re-publications of the summary while the worker runs (and at the end).
    summary_interval: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parent_ctx: contextvars.Context | None = None
        self._flows: dict[tuple[str, float | None], Flow[..., Any]] = {}
        self._flows_lock = threading.Lock()
        self._summary: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._counts: Counter[str] = Counter()
        self._summary_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_publish = time.monotonic()
        self._seen_runs: OrderedDict[str, None] = OrderedDict()
        #: The dispatcher's flow run id, once ``run`` has entered it.
        self.flow_run_id: str | None = None

    @property
    def run_name(self) -> str:
        """``fifoflow-dispatcher/QUEUE,...[POOL,...]``: the dispatcher's flow run name."""
        queues = ",".join(q.name for q in self.queues)
        return f"{DISPATCHER_FLOW}/{queues}[{','.join(self.pools)}]"

    # -- the parent flow ----------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work as the dispatcher flow run until stopped (or drained, with ``burst``)."""
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
        result = flow(
            worker_name=self.name,
            queues=[q.name for q in self.queues],
            pools=list(self.pools),
            modules=list(self.modules),
            concurrency=self.concurrency,
            burst=burst,
        )
        return int(result)

    def _dispatch_as_flow(self, burst: bool) -> int:
        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:  # pragma: no cover - Prefect guarantees it
            raise RuntimeError("the dispatcher flow has no flow run context")
        self.flow_run_id = str(ctx.flow_run.id)
        settings = (
            contextlib.nullcontext()
            if self.child_heartbeats
            else temporary_settings(updates={"flows.heartbeat_frequency": None})
        )
        with settings:
            self._parent_ctx = contextvars.copy_context()
        try:
            return Worker.run(self, burst)
        finally:
            self._publish_summary(final=True)

    # -- one job, one child flow run -----------------------------------------------

    def invoke(
        self, job: Claimed, fn: Callable[..., Any], params: dict[str, Any]
    ) -> tuple[Any, tuple[str, str]]:
        """Run one attempt as a child flow run; ('flow_run_id', id) goes on the record."""
        parent = self._parent_ctx
        if parent is None:
            raise RuntimeError("PrefectWorker.invoke runs only inside PrefectWorker.run")
        # A fresh copy per attempt: a Context cannot be entered by two threads at once.
        return parent.copy().run(self._run_child, job, fn, params)

    def _run_child(
        self, job: Claimed, fn: Callable[..., Any], params: dict[str, Any]
    ) -> tuple[Any, tuple[str, str]]:
        child = self._child_flow(job, fn)
        _current_job.set(JobInfo(job.id, job.queue, job.target, job.attempts))
        started = time.monotonic()
        try:
            with prefect.tags(CHILD_TAG, f"fifoflow-queue:{job.queue}"):
                if child.isasync:
                    state = asyncio.run(child(**params, return_state=True))
                else:
                    state = child(**params, return_state=True)
        except Exception:
            # Refused before a run existed (e.g. parameters that do not fit the flow).
            self._note(job, params, "NotStarted", time.monotonic() - started, None)
            raise
        duration = time.monotonic() - started
        run_id = str(state.state_details.flow_run_id)
        extra = ("flow_run_id", run_id)
        self._note(job, params, str(state.name), duration, run_id)
        self._log_to_dispatcher(job, str(state.name), duration, run_id)
        if not self._fresh(run_id):
            raise _with_extra(
                ChildRunFailed(f"Prefect handed back the existing flow run {run_id}; not run"),
                extra,
            )
        try:
            if state.is_completed():
                return state.result(), extra
            state.result()  # re-raises the child's own exception
        except Exception as e:
            raise _with_extra(e, extra) from None
        raise _with_extra(
            ChildRunFailed(f"child flow run {run_id} ended {state.name}: {state.message}"), extra
        )

    def _child_flow(self, job: Claimed, fn: Callable[..., Any]) -> Flow[..., Any]:
        key = (job.target, job.timeout)
        with self._flows_lock:
            flow = self._flows.get(key)
            if flow is None:
                flow = self._flows[key] = make_child_flow(job.target, fn, job.timeout)
        return flow

    def _fresh(self, run_id: str) -> bool:
        """False if Prefect returned a flow run it had already given us (a reused subflow)."""
        with self._summary_lock:
            if run_id in self._seen_runs:
                return False
            self._seen_runs[run_id] = None
            while len(self._seen_runs) > 10_000:
                self._seen_runs.popitem(last=False)
        return True

    def _log_to_dispatcher(self, job: Claimed, state: str, duration: float, run_id: str) -> None:
        # Back in the dispatcher's context: this line lands on the dispatcher's own run.
        with contextlib.suppress(Exception):
            get_run_logger().info(
                "job %s %s attempt %d: %s in %.2fs (flow run %s)",
                job.id,
                job.target,
                job.attempts,
                state,
                duration,
                run_id,
            )

    # -- the summary artifact ------------------------------------------------------

    def _note(
        self,
        job: Claimed,
        params: dict[str, Any],
        state: str,
        duration: float,
        run_id: str | None,
    ) -> None:
        text = json.dumps(params, separators=(",", ":"), default=str)
        row = {
            "job": job.id,
            "queue": job.queue,
            "target": job.target,
            "params": text if len(text) <= 200 else text[:197] + "...",
            "state": state,
            "attempts": job.attempts,
            "duration_s": round(duration, 3),
            "flow_run_id": run_id or "",
        }
        with self._summary_lock:
            self._summary.pop(job.id, None)
            self._summary[job.id] = row
            while len(self._summary) > self.summary_rows:
                self._summary.popitem(last=False)
            self._counts[state] += 1
            due = time.monotonic() - self._last_publish >= self.summary_interval
        if due:
            self._publish_summary(final=False)

    def summary(self) -> list[dict[str, Any]]:
        """The rows of the summary artifact: one per job, its latest attempt."""
        with self._summary_lock:
            return [dict(r) for r in self._summary.values()]

    def _publish_summary(self, final: bool) -> None:
        if not self._publish_lock.acquire(blocking=final):
            return  # another slot is publishing right now
        try:
            with self._summary_lock:
                rows = [dict(r) for r in self._summary.values()]
                counts = dict(self._counts)
                self._last_publish = time.monotonic()
            runs = sum(counts.values())
            by_state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
            description = (
                f"**fifoflow worker `{self.name}`** ({'final' if final else 'so far'}): "
                f"{runs} child flow run(s): {by_state}. One row per job, its latest attempt"
                + (
                    f"; the last {self.summary_rows} jobs only."
                    if len(rows) >= self.summary_rows
                    else "."
                )
            )
            table: list[dict[str, Any]] = rows or [{"job": "(no jobs)"}]
            create_table_artifact(
                table=table,
                key=_artifact_key([q.name for q in self.queues]),
                description=description,
            )
        except Exception as e:  # the summary must never take the worker down
            log.warning("worker %s: could not publish the summary artifact: %s", self.name, e)
        finally:
            self._publish_lock.release()


def make_child_flow(target: str, fn: Callable[..., Any], timeout: float | None) -> Flow[..., Any]:
    """The Prefect flow one job of ``target`` runs as (see the module docstring)."""
    if isinstance(fn, Flow):
        options: dict[str, Any] = {}
        if fn.flow_run_name is None:
            options["flow_run_name"] = _child_run_name
        if timeout and fn.timeout_seconds is None:
            options["timeout_seconds"] = timeout
        return fn.with_options(**options) if options else fn
    name: str | None = None
    body: Callable[..., Any] = fn
    if isinstance(fn, Task):
        body, name = _task_body(fn), fn.name
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        name = getattr(fn, "__name__", None) or target.split(":")[1]
    return Flow(
        fn=body,
        name=name,
        flow_run_name=_child_run_name,
        log_prints=True,
        validate_parameters=False,
        timeout_seconds=timeout,
    )


def _task_body(task: Task[..., Any]) -> Callable[..., Any]:
    """A flow body that runs ``task`` once, as a task of the child flow run."""
    if inspect.iscoroutinefunction(task.fn):

        @functools.wraps(task.fn)
        async def run_task_async(*args: Any, **kwargs: Any) -> Any:
            return await task(*args, **kwargs)

        return run_task_async

    @functools.wraps(task.fn)
    def run_task(*args: Any, **kwargs: Any) -> Any:
        return task(*args, **kwargs)

    return run_task


@contextlib.contextmanager
def quiet_prefect_console(level: int = logging.CRITICAL + 1) -> Iterator[None]:
    """Raise the level of Prefect's console log handlers for a while (the API still gets
    every log line): for live terminal views such as ``fifoflow demo``."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers: list[tuple[logging.Handler, int]] = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            for h in logger.handlers:
                if isinstance(h, PrefectConsoleHandler):
                    handlers.append((h, h.level))
                    h.setLevel(level)
    try:
        yield
    finally:
        for h, old in handlers:
            h.setLevel(old)
