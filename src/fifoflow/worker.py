"""The worker: N slots kept busy greedily, in queue order, without losing a job.

Threads, and who talks to the server:

* **slots** (N threads) run one job at a time. A slot that finishes a job reports the
  outcome and claims its next job in the same script call (``complete.lua``), so a busy
  slot costs one round trip per job.
* **the dispatcher** (the thread that called ``run``) hands jobs to idle slots. When
  nothing is due it blocks in ``BLPOP`` on the queues' wake lists, which every push feeds,
  with a timeout no longer than the time to the next delayed job or lease expiry, and a
  claim pipelined behind it; it is woken at once by a push, and by ``CLIENT UNBLOCK`` on
  shutdown.
* **the monitor** renews leases (heartbeat), refreshes the registry, and fails jobs that
  overran their timeout (a thread cannot be killed: the overrunning thread is abandoned,
  its eventual result discarded, and a fresh slot thread takes its place, so the worker
  keeps its full concurrency).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue as stdlib_queue
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from . import registry
from .connection import connect
from .errors import UsageError
from .queue import TARGET_RE, Claimed, Queue, validate_name
from .settings import Settings, get_settings
from .slots import ProcessSlot, TargetNotAllowed, check_allowed, import_target, one_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest an idle dispatcher blocks before it looks around again (a safety net only:
#: pushes, due jobs and shutdown all wake it earlier).
MAX_BLOCK = 5.0


class ResultNotJSON(TypeError):
    """The target returned something that is not JSON."""


@dataclass(slots=True)
class Run:
    """One attempt in progress on a slot."""

    job: Claimed
    started: float
    deadline: float | None
    abandoned: bool = False
    finishing: bool = False


@dataclass
class Slot:
    index: int
    generation: int = 0
    run: Run | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    process: ProcessSlot | None = field(default=None, repr=False)
    #: The slot's own server connection for its ack-and-claim calls (no pool round).
    conn: redis.Connection | None = field(default=None, repr=False)


class Worker:
    """Runs jobs whose targets lie inside ``modules`` from ``queues`` (first listed first)."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        modules: Iterable[str] = (),
        concurrency: int = 1,
        pools: Sequence[str] | None = None,
        *,
        name: str | None = None,
        url: str | None = None,
        lease: float | None = None,
        grace: float = 30.0,
        processes: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.modules = tuple(modules)
        if not self.modules:
            raise UsageError("a worker needs at least one module its targets may come from")
        for m in self.modules:
            if not TARGET_RE.match(f"{m}:x"):
                raise UsageError(f"invalid module name {m!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
        self.concurrency = concurrency
        self.pools = [validate_name("pool", p) for p in (pools or ["default"])]
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        lease_s = self.settings.lease_seconds if lease is None else lease
        ok = isinstance(lease_s, int | float) and not isinstance(lease_s, bool)
        if not (ok and 0 < lease_s < 1e9):  # NaN and inf too
            raise UsageError(f"lease must be a positive number of seconds, not {lease_s!r}")
        self.lease = float(lease_s)
        self.grace = grace
        self.client = connect(url)
        names = list(queues or [self.settings.queue])
        self.queues = [Queue(q, client=self.client, settings=self.settings) for q in names]
        self._by_name = {q.name: q for q in self.queues}
        self._wake_keys = [k for q in self.queues for k in q.wake_keys(self.pools)]
        # BLPOP needs a connection of its own, whose id CLIENT UNBLOCK can name.
        self._blocking = connect(url, single_connection_client=True)
        self._blocking_id = int(self._blocking.client_id())
        # A reconnect (after an outage) gets a new id; CLIENT UNBLOCK must name the new one.
        if self._blocking.connection is not None:
            self._blocking.connection.register_connect_callback(  # type: ignore[no-untyped-call]
                self._blocking_reconnected
            )

        self._lock = threading.Lock()
        self._idle_changed = threading.Condition(self._lock)
        self._idle = 0
        self._handoff: stdlib_queue.SimpleQueue[Claimed | None] = stdlib_queue.SimpleQueue()
        self.processes = processes
        self._slots = [
            Slot(i, process=ProcessSlot(self.modules) if processes else None)
            for i in range(concurrency)
        ]
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._monitor_wake = threading.Event()
        self._signals = 0
        self._burst = False
        self._blocked = False
        self._fn_cache: dict[str, Callable[..., Any]] = {}
        self.processed = 0
        self.started_at = time.time()

    # -- public ----------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work until stopped (or, with ``burst``, until the queues are drained); returns 0."""
        self._burst = burst
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._register()
        log.info(
            "worker %s: queues %s, pools %s, %d slot(s), modules %s",
            self.name,
            ",".join(q.name for q in self.queues),
            ",".join(self.pools),
            self.concurrency,
            ",".join(self.modules),
        )
        for slot in self._slots:
            self._start_slot(slot)
        monitor = threading.Thread(target=self._monitor, name="fifoflow-monitor", daemon=True)
        monitor.start()
        try:
            self._dispatch(burst)
        finally:
            self._shutdown()
            monitor.join(timeout=2)
        return 0

    def stop(self) -> None:
        """Stop claiming; running jobs finish within the grace period. Thread-safe."""
        if not self._stopping.is_set():
            log.info("worker %s: stopping (grace %.0fs)", self.name, self.grace)
            self._stopping.set()
        self._monitor_wake.set()
        with self._idle_changed:
            self._idle_changed.notify_all()
        with contextlib.suppress(redis.RedisError):
            self.client.client_unblock(self._blocking_id)

    # -- dispatching -----------------------------------------------------------

    def _dispatch(self, burst: bool) -> None:
        try:
            self._dispatch_loop(burst)
        except redis.RedisError:
            if not self._stopping.is_set():
                raise

    def _dispatch_loop(self, burst: bool) -> None:
        woken_with: list[Claimed] = []  # claimed in the same round trip as the wake-up
        while not self._stopping.is_set():
            with self._idle_changed:
                while self._idle == 0 and not self._stopping.is_set():
                    self._idle_changed.wait()
                want = self._idle
            if self._stopping.is_set():
                self._quietly(functools.partial(self.queues[0].release, woken_with))
                break
            # Slots only ever become idle while the dispatcher blocks, so the jobs claimed
            # then still fit.
            got, woken_with = woken_with, []
            soonest = MAX_BLOCK
            for q in self.queues:
                if len(got) >= want:
                    break
                nxt, jobs = self._retrying(
                    functools.partial(q.claim, self.name, want - len(got), self.pools, self.lease)
                )
                got += jobs
                if nxt >= 0:
                    soonest = min(soonest, nxt)
            if got:
                with self._lock:
                    self._idle -= len(got)
                for job in got:
                    self._handoff.put(job)
            if len(got) < want:
                if burst and self._retrying(self._drained):
                    log.info("worker %s: queues drained, leaving (burst)", self.name)
                    break
                woken_with = self._block(min(soonest, 1.0) if burst else soonest, want - len(got))

    def _block(self, timeout: float, n: int) -> list[Claimed]:
        """Wait for a wake token, with a claim of up to ``n`` jobs of the first queue
        pipelined behind the BLPOP: the server runs the claim the moment the wait ends, so a
        push reaches an idle slot in one server hop instead of two. CLIENT UNBLOCK ends the
        wait early (on stop); whatever the claim took then goes straight back."""
        timeout = max(timeout, 0.001)
        q = self.queues[0]
        conn = self._blocking.connection
        assert conn is not None
        claimed: list[Claimed] = []
        try:
            self._blocked = True
            wait = ("BLPOP", *self._wake_keys, timeout)
            claim = q.claim_command(self.name, n, self.pools, self.lease)
            conn.send_packed_command(conn.pack_commands([wait, claim]))  # type: ignore[no-untyped-call]
            conn.read_response()
            # On NOSCRIPT nothing was claimed; the next claim through the pool loads it.
            with contextlib.suppress(redis.exceptions.NoScriptError):
                claimed = q.parse_claim(conn.read_response())[1]
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if not self._stopping.is_set():
                log.warning("worker %s: server unreachable (%s); retrying", self.name, one_line(e))
                self._stopping.wait(0.5)
        finally:
            self._blocked = False
        if claimed and self._stopping.is_set():
            self._quietly(functools.partial(q.release, claimed))
            return []
        return claimed

    def _blocking_reconnected(self, conn: Any) -> None:
        conn.send_command("CLIENT", "ID")
        self._blocking_id = int(conn.read_response())

    def _drained(self) -> bool:
        with self._lock:
            if self._idle < self.concurrency:
                return False
        for q in self.queues:
            if q.ready_count(self.pools) or q.retrying() or q.stats()["running"]:
                return False
        return True

    # -- slots ------------------------------------------------------------------

    def _start_slot(self, slot: Slot) -> None:
        slot.generation += 1
        slot.run = None
        thread = threading.Thread(
            target=self._slot_loop,
            args=(slot, slot.generation),
            name=f"fifoflow-slot-{slot.index}",
            daemon=True,
        )
        slot.thread = thread
        thread.start()

    def _slot_loop(self, slot: Slot, generation: int) -> None:
        job: Claimed | None = None
        while True:
            if job is None:
                with self._idle_changed:
                    self._idle += 1
                    self._idle_changed.notify()
                    last_busy = self._idle == self.concurrency
                if last_busy and self._burst and self._blocked:
                    # In burst mode the last busy slot going idle may mean "drained": let
                    # the dispatcher look now rather than at its next timeout.
                    self._quietly(lambda: self.client.client_unblock(self._blocking_id))
                job = self._handoff.get()
                if job is None:
                    return
                if self._stopping.is_set():
                    # Claimed just before the stop, never started: back to its place.
                    self._quietly(functools.partial(self._by_name[job.queue].release, [job]))
                    job = None
                    continue
            run = Run(job, time.monotonic(), None)
            if job.timeout and slot.process is None:  # a process slot times itself
                run.deadline = run.started + job.timeout
            with self._lock:
                slot.run = run
            if run.deadline is not None:
                self._monitor_wake.set()
            outcome, payload, tb, extra = self._execute(job, slot)
            with self._lock:
                if run.abandoned or slot.generation != generation:
                    return  # the monitor failed this attempt for its timeout
                run.finishing = True
            duration = time.monotonic() - run.started
            job = self._finish(slot, job, outcome, payload, tb, extra, duration)
            with self._lock:
                slot.run = None

    def _finish(
        self,
        slot: Slot,
        job: Claimed,
        outcome: str,
        payload: str,
        tb: str,
        extra: tuple[str, str],
        duration: float,
    ) -> Claimed | None:
        """Record the outcome and, unless stopping, claim this slot's next job with it."""
        q = self._by_name[job.queue]
        # Only the first queue is claimed from here; others go through the dispatcher so
        # the queues' order is kept.
        n = 0 if self._stopping.is_set() or q is not self.queues[0] else 1
        if slot.conn is None:
            slot.conn = self.client.connection_pool.get_connection()
        conn = slot.conn
        result = self._retrying(
            lambda: q.complete(
                job,
                outcome,
                payload,
                traceback=tb,
                extra=extra,
                claim=(self.name, n, self.pools, self.lease),
                conn=conn,
            ),
            forever=True,
        )
        self.processed += 1
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(
            level,
            "job %s %s %s in %.3fs%s",
            job.id,
            job.target,
            result.outcome,
            duration,
            "" if outcome == "ok" else f": {payload}",
        )
        if result.claimed and self._stopping.is_set():
            # A stop arrived while the call was in flight: give the job straight back.
            self._retrying(lambda: q.release(result.claimed))
            return None
        return result.claimed[0] if result.claimed else None

    def _execute(self, job: Claimed, slot: Slot) -> tuple[str, str, str, tuple[str, str]]:
        """Run one attempt: (outcome, result JSON or error line, traceback, extra field)."""
        log.debug("job %s %s started (attempt %d)", job.id, job.target, job.attempts)
        fn = self._fn_cache.get(job.target)
        if fn is None:
            try:
                check_allowed(job.target, self.modules)
                if slot.process is None:
                    fn = self._fn_cache[job.target] = import_target(job.target, self.modules)
            except TargetNotAllowed as e:
                return "dead", one_line(e), "", ("", "")
            except Exception as e:
                return "fail", one_line(e), traceback.format_exc(), ("", "")
        if slot.process is not None:
            return (*slot.process.run(job.target, job.params, job.timeout), ("", ""))
        try:
            assert fn is not None
            result, extra = self.invoke(job, fn, json.loads(job.params))
            try:
                text = json.dumps(result, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ResultNotJSON(
                    f"{job.target} returned a value that is not JSON: {e}"
                ) from None
            return "ok", text, "", extra
        except Exception as e:
            return (
                "fail",
                one_line(e),
                traceback.format_exc(),
                getattr(e, "fifoflow_extra", ("", "")),
            )

    def invoke(
        self, job: Claimed, fn: Callable[..., Any], params: dict[str, Any]
    ) -> tuple[Any, tuple[str, str]]:
        """Call the target; Prefect mode overrides this to run it as a child flow run."""
        return fn(**params), ("", "")

    # -- monitor: heartbeats, registry, timeouts -----------------------------------

    def _monitor(self) -> None:
        interval = self.lease / 3
        next_beat = time.monotonic() + interval
        next_maintain = time.monotonic() + 30
        while not self._stopped.is_set():
            now = time.monotonic()
            deadlines = self._check_timeouts(now)
            if now >= next_beat:
                self._quietly(self._heartbeat)
                next_beat = now + interval
            if now >= next_maintain:
                for q in self.queues:
                    self._quietly(q.maintain)
                next_maintain = now + 30
            wait = min([next_beat - now, *[d - now for d in deadlines]])
            self._monitor_wake.wait(max(wait, 0.005))
            self._monitor_wake.clear()

    def _running(self) -> list[Claimed]:
        """Jobs being run, not yet being reported (a report ends the lease anyway)."""
        with self._lock:
            return [
                s.run.job
                for s in self._slots
                if s.run is not None and not s.run.abandoned and not s.run.finishing
            ]

    def _heartbeat(self) -> None:
        running = self._running()
        for q in self.queues:
            mine = [j for j in running if j.queue == q.name]
            lost = set(q.extend(mine, self.lease))
            # A job that finished while the call was under way is not lost, just done.
            for job_id in lost & {j.id for j in self._running()}:
                log.warning(
                    "job %s: lease lost to another worker; its outcome will be refused", job_id
                )
        self._register(running)

    def _check_timeouts(self, now: float) -> list[float]:
        """Fail overrunning attempts; return the deadlines still ahead."""
        ahead: list[float] = []
        expired: list[tuple[Slot, Run]] = []
        with self._lock:
            for slot in self._slots:
                run = slot.run
                if run is None or run.deadline is None or run.abandoned or run.finishing:
                    continue
                if now >= run.deadline:
                    run.abandoned = True
                    expired.append((slot, run))
                else:
                    ahead.append(run.deadline)
        for slot, run in expired:
            job = run.job
            msg = f"TimeoutError: job exceeded its timeout of {job.timeout:g}s"
            q = self._by_name[job.queue]
            result = self._retrying(functools.partial(q.complete, job, "fail", msg), forever=True)
            log.warning("job %s %s timed out (%s)", job.id, job.target, result.outcome)
            with self._lock:
                slot.run = None
            if not self._stopping.is_set():
                self._start_slot(slot)
        return ahead

    def _register(self, running: list[Claimed] | None = None) -> None:
        info = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": [q.name for q in self.queues],
            "pools": self.pools,
            "concurrency": self.concurrency,
            "running": [j.id for j in (running or [])],
            "processed": self.processed,
            "started_at": self.started_at,
            "heartbeat": time.time(),
        }
        registry.register(self.client, info, self.lease)

    # -- stopping ----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            # Not stop() here: a handler runs in the main thread, which may hold the very
            # locks stop() takes (a non-reentrant lock would deadlock). A thread may wait.
            threading.Thread(target=self.stop, name="fifoflow-stop", daemon=True).start()
            return
        # Second signal: leave now. The leases of running jobs bring them back in line.
        log.warning("worker %s: second signal, exiting at once", self.name)
        os._exit(1)

    def _shutdown(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + self.grace
        while self._busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            stuck = [s for s in self._slots if s.run is not None and not s.run.finishing]
            left = [s.run for s in stuck if s.run is not None]
            for run in left:
                run.abandoned = True
        for slot in stuck:
            if slot.process is not None:
                slot.process.kill()
        if left:
            log.warning(
                "worker %s: %d job(s) still running after the grace period; "
                "putting them back in line",
                self.name,
                len(left),
            )
            for q in self.queues:
                mine = [r.job for r in left if r.job.queue == q.name]
                self._quietly(functools.partial(q.release, mine))
        # Outcomes being reported are let through: a result is never dropped on purpose.
        finish_by = time.monotonic() + 10
        while self._finishing() and time.monotonic() < finish_by:
            time.sleep(0.02)
        for _ in self._slots:
            self._handoff.put(None)
        for slot in self._slots:
            if slot.process is not None:
                slot.process.close()
            if slot.conn is not None:
                self.client.connection_pool.release(slot.conn)
                slot.conn = None
        self._stopped.set()
        self._monitor_wake.set()
        self._quietly(lambda: registry.unregister(self.client, self.name))
        log.info("worker %s: stopped after %d job(s)", self.name, self.processed)
        self._blocking.close()

    def _busy(self) -> bool:
        with self._lock:
            return self._idle < self.concurrency

    def _finishing(self) -> bool:
        with self._lock:
            return any(s.run is not None and s.run.finishing for s in self._slots)

    # -- outages ---------------------------------------------------------------------------

    def _retrying(self, call: Callable[[], T], *, forever: bool = False) -> T:
        """Run a server call, retrying connection failures with back-off (0.1 s to 5 s).

        Gives up once the worker is stopping, except for ``forever`` calls (reporting an
        outcome), which keep trying so no result is dropped; the fencing token makes a
        repeated report harmless.
        """
        delay = 0.1
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                if self._stopped.is_set() or (self._stopping.is_set() and not forever):
                    raise
                log.warning("server unreachable (%s); retrying in %.1fs", one_line(e), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _quietly(self, call: Callable[[], object]) -> None:
        """Best-effort calls (heartbeats, registry, releases on stop): log, never raise."""
        try:
            call()
        except redis.RedisError as e:
            log.warning("worker %s: %s", self.name, one_line(e))
