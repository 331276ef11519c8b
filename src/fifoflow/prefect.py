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
import os
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from .errors import UsageError
from .queue import Claimed
from .worker import Worker

# Without PREFECT_API_URL, Prefect starts a local API server process, which creates its
# database the first time: on a small or busy machine that outlasts Prefect's default of
# 20 s. A default only: an explicit setting wins (read when Prefect is first imported).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

try:
    import httpx
    import prefect
    from prefect import Flow, Task
    from prefect.artifacts import create_table_artifact
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.context import FlowRunContext
    from prefect.flow_engine import run_flow
    from prefect.logging import get_run_logger
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import temporary_settings
    from prefect.states import Crashed, Pending
    from prefect.utilities.callables import get_call_parameters
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
        # Every Prefect API call would be an INFO line of httpx's under a root logger at INFO.
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)
        self._parent_ctx: contextvars.Context | None = None
        self._flows: dict[tuple[str, float | None], tuple[Flow[..., Any], Task[..., Any]]] = {}
        self._flows_lock = threading.Lock()
        self._summary: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._counts: Counter[str] = Counter()
        self._summary_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_publish = time.monotonic()
        self._api: SyncPrefectClient | None = None
        self._active: dict[str, str] = {}  # child flow run id -> job id, while it runs
        #: The dispatcher's flow run id, once ``run`` has entered it.
        self.flow_run_id: str | None = None
        #: ``time.monotonic()`` when the dispatcher flow run began (the API was up by then).
        self.dispatch_started: float | None = None

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
        # Logs are sent in batches from a background thread: when run() returns, they are in.
        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=5)
        return int(result)

    def _dispatch_as_flow(self, burst: bool) -> int:
        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:  # pragma: no cover - Prefect guarantees it
            raise RuntimeError("the dispatcher flow has no flow run context")
        self.flow_run_id = str(ctx.flow_run.id)
        self.dispatch_started = time.monotonic()
        settings = (
            contextlib.nullcontext()
            if self.child_heartbeats
            else temporary_settings(updates={"flows.heartbeat_frequency": None})
        )
        with settings:
            self._parent_ctx = contextvars.copy_context()
        with api_client() as self._api:
            try:
                return Worker.run(self, burst)
            finally:
                self._crash_abandoned()
                self._publish_summary(final=True)
                self._parent_ctx = None

    def _crash_abandoned(self) -> None:
        """Children still running when the worker is done were abandoned (a timeout, or the
        grace period ran out and their jobs went back in line): say so on their runs, which
        would otherwise show Running for ever."""
        with self._summary_lock:
            abandoned = dict(self._active)
            for run_id, job_id in abandoned.items():
                row = self._summary.get(job_id)
                if row is not None and row["flow_run_id"] == run_id:
                    row["state"] = "Crashed"
                    self._counts["Crashed"] += 1
        for run_id, job_id in abandoned.items():
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
        _current_job.set(JobInfo(job.id, job.queue, job.target, job.attempts))
        child, tracking = self._child_flow(job, fn)
        started = time.monotonic()
        tags = [CHILD_TAG, f"fifoflow-queue:{job.queue}"]
        try:
            # Bind first: parameters that do not fit fail here, before any run exists.
            parameters = get_call_parameters(child.fn, (), params)
            flow_run = self._create_child_run(job, child, tracking, parameters, tags)
        except Exception:
            self._note(job, params, "NotStarted", time.monotonic() - started, None)
            raise
        run_id = str(flow_run.id)
        extra = ("flow_run_id", run_id)
        with self._summary_lock:
            self._active[run_id] = job.id
        self._note(job, params, "Running", 0.0, run_id, final=False)
        try:
            with prefect.tags(*tags):
                state = _run_to_state(child, flow_run, parameters)
        except Exception as e:
            self._note(job, params, "Crashed", time.monotonic() - started, run_id)
            raise _with_extra(e, extra) from None
        finally:
            with self._summary_lock:
                self._active.pop(run_id, None)
        duration = time.monotonic() - started
        self._note(job, params, str(state.name), duration, run_id)
        self._log_to_dispatcher(job, str(state.name), duration, run_id)
        try:
            if state.is_completed():
                return state.result(), extra
            state.result()  # re-raises the child's own exception
        except Exception as e:
            raise _with_extra(e, extra) from None
        raise _with_extra(
            ChildRunFailed(f"child flow run {run_id} ended {state.name}: {state.message}"), extra
        )

    def _create_child_run(
        self,
        job: Claimed,
        child: Flow[..., Any],
        tracking: Task[..., Any],
        parameters: dict[str, Any],
        tags: list[str],
    ) -> FlowRun:
        """The child's flow run, created the way Prefect records a subflow: a tracking task
        run in the dispatcher's flow run, and a flow run whose parent_task_run_id is it.

        Created here rather than by Prefect's subflow call so that (1) the dynamic key is a
        UUID, never a per-flow counter shared by the slot threads, and (2) a "database is
        busy" answer of a SQLite-backed API is retried within milliseconds, not Prefect's
        client back-off of 2 s and more.
        """
        client = self._api
        if client is None or self.flow_run_id is None:  # pragma: no cover - set by run()
            raise RuntimeError("the dispatcher has no API client")
        task_run = client.create_task_run(
            task=tracking,
            flow_run_id=UUID(self.flow_run_id),
            dynamic_key=uuid4().hex,
            name=f"{child.name}-{job.id}-try{job.attempts}",
            extra_tags=tags,
            state=Pending(),
            task_inputs={name: [] for name in parameters},
        )
        return client.create_flow_run(
            flow=child,
            name=None if child.flow_run_name else f"{job.id}-try{job.attempts}",
            parameters=child.serialize_parameters(parameters),
            tags=tags,
            parent_task_run_id=task_run.id,
        )

    def _child_flow(
        self, job: Claimed, fn: Callable[..., Any]
    ) -> tuple[Flow[..., Any], Task[..., Any]]:
        key = (job.target, job.timeout)
        with self._flows_lock:
            pair = self._flows.get(key)
            if pair is None:
                child = make_child_flow(job.target, fn, job.timeout)
                # What Prefect's own subflow call puts in the parent run for a child.
                tracking = Task(name=child.name, fn=child.fn, version=child.version)
                pair = self._flows[key] = (child, tracking)
        return pair

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
        final: bool = True,
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
            self._summary[job.id] = row  # a job keeps its place; its latest attempt shows
            while len(self._summary) > self.summary_rows:
                self._summary.popitem(last=False)
            if final:
                self._counts[state] += 1
            due = final and time.monotonic() - self._last_publish >= self.summary_interval
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


def _run_to_state(
    child: Flow[..., Any], flow_run: FlowRun, parameters: dict[str, Any]
) -> State[Any]:
    """Run ``child`` in the given (already created) flow run; its final state."""
    if child.isgenerator:
        raise TypeError(f"flow {child.name!r} is a generator; fifoflow needs a return value")
    outcome = run_flow(flow=child, flow_run=flow_run, parameters=parameters, return_type="state")
    if inspect.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    if not isinstance(outcome, State):  # pragma: no cover - return_type="state"
        raise ChildRunFailed(f"Prefect returned {type(outcome).__name__}, not a state")
    return outcome


@contextlib.contextmanager
def api_client() -> Iterator[SyncPrefectClient]:
    """A Prefect API client that retries "busy" answers (503) within milliseconds.

    A SQLite-backed API (the ephemeral one, or ``prefect server start`` without Postgres)
    answers 503 when two writes collide; Prefect's client then sleeps 2 s or more before
    it tries again, which would cost a child that much for a few milliseconds of lock. A
    503 is retried here after 10 ms, 20 ms, ... 0.5 s; anything else, and a 503 that
    lasts, is handed to Prefect's own retrying ``send`` unchanged. Servers that require
    CSRF tokens keep Prefect's client as it is.
    """
    with get_client(sync_client=True) as client:
        http = getattr(client, "_client", None)
        if isinstance(http, httpx.Client) and not getattr(http, "enable_csrf_support", True):
            setattr(http, "send", _quick_retry_send(http, http.send))  # noqa: B010
        yield client


def _quick_retry_send(
    http: httpx.Client, prefect_send: Callable[..., httpx.Response]
) -> Callable[..., httpx.Response]:
    plain_send = httpx.Client.send

    def send(request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        delay = 0.01
        for _ in range(8):
            try:
                response = plain_send(http, request, *args, **kwargs)
            except httpx.HTTPError:
                break
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)
        return prefect_send(request, *args, **kwargs)

    return send


def make_child_flow(target: str, fn: Callable[..., Any], timeout: float | None) -> Flow[..., Any]:
    """The Prefect flow one job of ``target`` runs as (see the module docstring)."""
    if isinstance(fn, Flow):
        if timeout and fn.timeout_seconds is None:
            return fn.with_options(timeout_seconds=timeout)
        return fn
    name: str | None = None
    body: Callable[..., Any] = fn
    if isinstance(fn, Task):
        body, name = _task_body(fn), fn.name
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        name = getattr(fn, "__name__", None) or target.split(":")[1]
    return Flow(
        fn=body,
        name=name,
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
