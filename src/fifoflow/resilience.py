"""One error policy for every thread of a worker (slots, dispatcher, monitor, watch).

Any server error (a lost connection, but also READONLY during a failover, OOM, BUSY,
LOADING, MASTERDOWN ...) is retried with capped, jittered back-off; it is logged once per
*episode* (the first error after a success, worker-wide, then one line when the server
answers again), not once per call. A thread that dies anyway (a bug) is logged with its
traceback, counted, and restarted. What went wrong shows in ``fifoflow workers``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisClusterException

from .errors import NotReplicated, ServerOutOfMemory
from .execution import one_line

log = logging.getLogger("fifoflow.worker")

T = TypeVar("T")

#: Errors that a later attempt of the same call may not hit (a cluster client's own
#: "cannot reach any node" and a replica that did not confirm in time among them).
RETRYABLE: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisClusterException,
    ServerOutOfMemory,
    NotReplicated,
)
#: Back-off of retries: from the first delay, doubled each time, up to the cap (seconds).
FIRST_DELAY, MAX_DELAY = 0.05, 5.0


class Health:
    """The errors a worker met, shared by its threads (shown by ``fifoflow workers``)."""

    def __init__(self, who: str) -> None:
        self.who = who
        self._lock = threading.Lock()
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.dead_threads = 0
        self.abandoned = 0
        self._episode: float | None = None  # monotonic start of the current error episode

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error, self.last_error_at = one_line(exc), time.time()
            first = self._episode is None
            if first:
                self._episode = time.monotonic()
        if first:
            log.warning("%s: server error (%s); retrying with back-off", self.who, one_line(exc))
        else:
            log.debug("%s: server error again (%s)", self.who, one_line(exc))

    def recovered(self) -> None:
        if self._episode is None:  # the common case, without the lock
            return
        with self._lock:
            started, self._episode = self._episode, None
        if started is not None:
            log.info(
                "%s: the server answers again (after %.1fs)", self.who, time.monotonic() - started
            )

    def thread_died(self, thread: str, exc: BaseException) -> None:
        with self._lock:
            self.dead_threads += 1
            self.last_error, self.last_error_at = f"{thread}: {one_line(exc)}", time.time()
        log.error("%s: thread %s died; restarting it", self.who, thread, exc_info=exc)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "errors": self.errors,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "dead_threads": self.dead_threads,
                "abandoned": self.abandoned,
            }


class Stopping(Exception):
    """A retried call gave up because the worker is stopping."""


class Retrier:
    """Runs server calls under the policy above."""

    def __init__(self, health: Health, stopping: threading.Event, stopped: threading.Event):
        self.health = health
        self.stopping = stopping
        self.stopped = stopped

    def __call__(self, call: Callable[[], T], *, forever: bool = False) -> T:
        """``call()``, retried until it succeeds. Gives up (``Stopping``) once the worker
        stops, except ``forever`` calls (reporting an outcome: a result is never dropped
        on purpose), which give up only once the worker has stopped for good."""
        delay = FIRST_DELAY
        while True:
            try:
                value = call()
            except RETRYABLE as e:
                if self.stopped.is_set() or (self.stopping.is_set() and not forever):
                    raise Stopping(one_line(e)) from e
                self.health.failed(e)
                pause = delay * random.uniform(0.5, 1.0)
                if forever:
                    time.sleep(pause)
                else:
                    self.stopping.wait(pause)
                delay = min(delay * 2, MAX_DELAY)
                continue
            self.health.recovered()
            return value

    def once(self, call: Callable[[], T]) -> T | None:
        """``call()`` once (a heartbeat, a check): an error is noted, not raised."""
        try:
            value = call()
        except RETRYABLE as e:
            self.health.failed(e)
            return None
        self.health.recovered()
        return value


def supervised(
    name: str, body: Callable[[], None], health: Health, stopping: threading.Event
) -> threading.Thread:
    """A daemon thread that runs ``body`` and, should it raise, logs, counts and restarts
    it (with back-off) until the worker stops."""

    def loop() -> None:
        delay = 0.1
        while True:
            try:
                body()
                return
            except Exception as e:
                health.thread_died(name, e)
                if stopping.wait(delay):
                    return
                delay = min(delay * 2, MAX_DELAY)

    return threading.Thread(target=loop, name=name, daemon=True)
