"""One execution path for every kind of slot: resolve the allow-listed target, bind its
params, call it, encode its result, and turn whatever happened into an ``Outcome``.

Thread slots call ``execute`` in the slot thread (``ThreadRunner``), process slots in their
child process, and Prefect mode passes a ``call`` that runs the function as a child flow
run (and starts the slot's timeout clock once the run exists: ``timeout_starts_now``). What went
wrong decides the outcome: an error that no retry can mend (a target outside the allowed
modules, one that does not exist, params that do not fit its signature, ``NoRetry`` or a
type the target declared with ``no_retry``) is ``dead`` at once; anything else, even
``SystemExit`` or ``KeyboardInterrupt`` raised by the target, is a failed attempt that is
retried while retries are left.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .allowlist import Resolver, TargetNotAllowed, TargetNotFound
from .errors import NoRetry
from .records import Claimed, Outcome, OutcomeKind

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
NO_RETRY_ATTR = "__fifoflow_no_retry__"


@dataclass(frozen=True)
class JobInfo:
    """The job a target is running for: ``fifoflow.current_job()`` inside a target."""

    id: str
    queue: str
    target: str
    attempt: int  # 1 for the first attempt, growing with each retry
    timeout: float | None = None
    #: The server the worker uses (None: the process's default, ``FIFOFLOW_URL``).
    url: str | None = None
    #: Set when the job is cancelled while it runs (``fifoflow cancel ID``).
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The job's tags (``push(..., tags=)``).
    tags: tuple[str, ...] = ()
    #: When the job last entered the line (Unix seconds), if known.
    queued_at: float | None = None

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled the job: a long target checks it and stops."""
        return self.cancel_event.is_set()

    def push(self, target: str, params: dict[str, Any] | None = None, **options: Any) -> Any:
        """Push a job from inside this one (a fan-out), to this job's queue unless
        ``queue=`` names another; the options are ``Queue.push``'s. Returns its ``Job``."""
        return _queue(options.pop("queue", self.queue), self.url).push(target, params, **options)


_queues: dict[tuple[str, str | None], Any] = {}


def _queue(name: str, url: str | None) -> Any:
    """One ``Queue`` per queue and server for the whole process (pushes from targets)."""
    from .queue import Queue

    found = _queues.get((name, url))
    if found is None:
        found = _queues[(name, url)] = Queue(name, url)
    return found


_current: contextvars.ContextVar[JobInfo | None] = contextvars.ContextVar(
    "fifoflow_current_job", default=None
)


def current_job() -> JobInfo | None:
    """The job being run, from inside its target (None elsewhere)."""
    return _current.get()


class Cancelled(NoRetry):
    """Raised by ``check_cancelled`` inside a target whose job was cancelled."""


def check_cancelled() -> None:
    """Inside a target: raise ``fifoflow.Cancelled`` if its job was cancelled meanwhile
    (thread slots stop cooperatively: call this between steps of long work)."""
    job = _current.get()
    if job is not None and job.cancelled:
        raise Cancelled(f"job {job.id} was cancelled")


def run_as(job: JobInfo, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``current_job()`` returning ``job``: for calls that run in
    another context (Prefect mode runs each attempt in a copy of the dispatcher's)."""
    token = _current.set(job)
    try:
        return fn(*args)
    finally:
        _current.reset(token)


def no_retry(*exc_types: type[BaseException]) -> Callable[[F], F]:
    """Declare exceptions after which a target's job is dead at once, never retried::

    @fifoflow.no_retry(KeyError, ValidationError)
    def load(path: str) -> dict: ...
    """

    def mark(fn: F) -> F:
        setattr(fn, NO_RETRY_ATTR, exc_types)
        return fn

    return mark


#: How the function is called: ``call(job, fn, kwargs, extra)``; ``extra`` collects fields
#: to record on the job whatever the outcome (Prefect mode puts the child run's id there).
Call = Callable[[JobInfo, Callable[..., Any], dict[str, Any], dict[str, str]], Any]


def direct_call(
    job: JobInfo, fn: Callable[..., Any], kwargs: dict[str, Any], extra: dict[str, str]
) -> Any:
    try:
        return fn(**kwargs)
    except TypeError as e:
        # Raised by the call itself (no frame of the target under this one): the params
        # do not bind. Said precisely, and never retried; checked only when it happens.
        if e.__traceback__ is not None and e.__traceback__.tb_next is None:
            bind(fn, job.target, kwargs)
        raise


class ParamsMismatch(TypeError):
    """The job's params do not bind to the target's signature."""


class ResultNotJSON(TypeError):
    """The target returned something that is not JSON."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def bind(fn: Callable[..., Any], target: str, kwargs: dict[str, Any]) -> None:
    """Refuse params that do not fit before the call (a TypeError inside the target is
    the target's own, and retried)."""
    sig = _signature(fn)
    if sig is None:  # builtins and the like: let the call decide
        return
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        params = sig.parameters
        kinds = inspect.Parameter
        named = {
            n
            for n, p in params.items()
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        }
        takes_any = any(p.kind == kinds.VAR_KEYWORD for p in params.values())
        unexpected = [] if takes_any else sorted(k for k in kwargs if k not in named)
        missing = [n for n in named if params[n].default is kinds.empty and n not in kwargs]
        parts = [f"unexpected {', '.join(map(repr, unexpected))}"] if unexpected else []
        parts += [f"missing {', '.join(map(repr, missing))}"] if missing else []
        detail = "; ".join(parts) or str(e)
        raise ParamsMismatch(f"params do not fit {target}({', '.join(params)}): {detail}") from None


def encode_result(value: Any, target: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ResultNotJSON(f"{target} returned a value that is not JSON: {e}") from None


def _never_retried(fn: Callable[..., Any] | None, exc: BaseException) -> bool:
    if isinstance(exc, NoRetry | TargetNotAllowed | TargetNotFound | ParamsMismatch):
        return True
    for holder in (fn, getattr(fn, "fn", None)):
        declared = getattr(holder, NO_RETRY_ATTR, ())
        if declared and isinstance(exc, declared):
            return True
    return False


def execute(
    job: Claimed,
    resolver: Resolver,
    call: Call = direct_call,
    url: str | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Run one attempt of ``job``; never raises (a crash of the target is its outcome).
    A gathering job gets its parents' results as ``results`` (or, in a chain, the one
    result as ``input``)."""
    info = JobInfo(
        job.id,
        job.queue,
        job.target,
        job.attempts,
        job.timeout,
        url,
        cancel or threading.Event(),
        tuple(job.tag_list()),
        job.queued_at,
    )
    extra: dict[str, str] = {}
    fn: Callable[..., Any] | None = None
    token = _current.set(info)
    try:
        fn = resolver(job.target)
        kwargs = json.loads(job.params)
        if job.gather:
            results = json.loads(job.gathered) if job.gathered else []
            if job.gather == "input":
                kwargs["input"] = results[0] if results else None
            else:
                kwargs["results"] = results
        if call is not direct_call:  # other calls may do work before they bind (Prefect)
            bind(fn, job.target, kwargs)
        value = call(info, fn, kwargs, extra)
        return Outcome("ok", encode_result(value, job.target), extra=extra)
    except BaseException as e:
        kind: OutcomeKind = "dead" if _never_retried(fn, e) else "fail"
        tb = "" if isinstance(e, TargetNotAllowed) else traceback.format_exc()
        return Outcome(kind, one_line(e), tb, extra)
    finally:
        _current.reset(token)


#: The running attempt's clock start, per slot thread (see ``timeout_starts_now``).
attempt_clock = threading.local()


def timeout_starts_now() -> None:
    """The running attempt's timeout counts from now. A worker whose ``call`` has a set-up
    (``Worker.call_starts_clock``: a Prefect child run to create) calls it, in the slot
    thread, when the set-up ends, so a set-up slowed by load never eats the job's own
    time. Outside a slot thread it does nothing."""
    start: Callable[[], None] | None = getattr(attempt_clock, "start", None)
    if start is not None:
        start()


class Runner(Protocol):
    """How a slot runs an attempt: ``ThreadRunner`` here, ``procslot.ProcessRunner``."""

    #: True if the runner stops an attempt at its timeout itself (a process can be killed).
    enforces_timeout: bool

    def run(self, job: Claimed, cancel: threading.Event) -> Outcome: ...
    def stop(self) -> None: ...  # a cancel: stop the attempt now if the runner can
    def kill(self) -> None: ...
    def close(self) -> None: ...


class ThreadRunner:
    """Runs a job in the slot thread itself."""

    enforces_timeout = False

    def __init__(
        self, resolver: Resolver, call: Call = direct_call, url: str | None = None
    ) -> None:
        self.resolver, self.call, self.url = resolver, call, url

    def run(self, job: Claimed, cancel: threading.Event) -> Outcome:
        return execute(job, self.resolver, self.call, self.url, cancel)

    def stop(self) -> None:  # cooperative: the target sees current_job().cancelled
        pass

    def kill(self) -> None:  # a thread cannot be killed; the monitor abandons it
        pass

    def close(self) -> None:
        pass
