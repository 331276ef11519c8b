"""A worker's slots: N threads, each running one job at a time.

A slot that finishes a job reports the outcome and claims its next job in the same script
call (``complete.lua``), so a busy slot costs one round trip per job, on a connection of
its own. Idle slots wait for the dispatcher to hand them a job. How a job runs is the
slot's *runner*: in the slot thread (``ThreadRunner``: ``execution.execute``, with a
``call`` that Prefect mode replaces) or in a child process (``procslot.ProcessRunner``).

A thread cannot be killed: a thread-slot job past its timeout is *abandoned* by the
monitor, which reports the timeout and gives the slot a fresh thread. Abandoned threads
that are still running are counted; at ``max_abandoned`` the worker drains and restarts
(the CLI re-executes itself), and a job whose abandoned attempt still runs here is never
started again here meanwhile (it goes back in line for a second, for another worker).
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .execution import Runner, attempt_clock
from .records import FINAL, Claimed, Completion, Outcome, attempt_line
from .resilience import supervised
from .topology import Lane

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("fifoflow.worker")

#: Seconds a job waits in line when its abandoned attempt still runs in this process.
BUSY_ELSEWHERE_DELAY = 1.0


@dataclass(slots=True)
class Run:
    """One attempt in progress on a slot."""

    job: Claimed
    started: float
    deadline: float | None
    abandoned: bool = False
    finishing: bool = False  # its outcome is being reported
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Slot:
    index: int
    runner: Runner
    generation: int = 0
    run: Run | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    #: The slot's own server connections (one per node) for its report-and-claim calls.
    conn: Lane | None = field(default=None, repr=False)


class Slots:
    def __init__(self, worker: Worker, make_runner: Callable[[], Runner]) -> None:
        self.w = worker
        self.lock = threading.Lock()
        self.idle_changed = threading.Condition(self.lock)
        self.idle = 0
        self.handoff: stdlib_queue.SimpleQueue[Claimed | None] = stdlib_queue.SimpleQueue()
        self.slots = [Slot(i, make_runner()) for i in range(worker.concurrency)]
        self._abandoned: list[tuple[threading.Thread, str]] = []
        self.finished = 0  # jobs whose last attempt ran here (succeeded or dead), for the log

    # -- the dispatcher's side -----------------------------------------------------------

    def wait_idle(self) -> int:
        """Block until a slot is idle (or the worker stops); how many are idle."""
        with self.idle_changed:
            while self.idle == 0 and not self.w.stopping.is_set():
                self.idle_changed.wait()
            return self.idle

    def hand_out(self, jobs: list[Claimed]) -> None:
        with self.lock:
            self.idle -= len(jobs)
        for job in jobs:
            self.handoff.put(job)

    def wake_waiters(self) -> None:
        with self.idle_changed:
            self.idle_changed.notify_all()

    # -- the slot threads ------------------------------------------------------------------

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: Slot) -> None:
        slot.generation += 1
        gen = slot.generation
        slot.run = None
        slot.thread = supervised(
            f"fifoflow-slot-{slot.index}",
            lambda: self._loop(slot, gen),
            self.w.health,
            self.w.stopping,
        )
        slot.thread.start()

    def _loop(self, slot: Slot, gen: int) -> None:
        try:
            self._work(slot, gen)
        finally:  # a slot that dies holding a job lets its lease run out: redelivered
            with self.lock:
                if slot.generation == gen and slot.run is not None and not slot.run.finishing:
                    slot.run = None

    def _work(self, slot: Slot, gen: int) -> None:
        w = self.w
        job: Claimed | None = None
        while True:
            if job is None:
                self._went_idle()
                job = self.handoff.get()
                if job is None:
                    return
            if w.stopping.is_set():  # claimed just before the stop: back to its place
                w.give_back([job])
                job = None
            elif self._abandoned_attempt_alive(job.id):
                w.give_back([job], delay=BUSY_ELSEWHERE_DELAY)
                job = None
            else:
                run = Run(job, time.monotonic(), None)
                timeout = None if slot.runner.enforces_timeout else job.timeout
                if timeout and not w.call_starts_clock:
                    run.deadline = run.started + timeout
                with self.lock:
                    slot.run = run
                if run.deadline is not None:
                    w.monitor.wake()
                attempt_clock.start = (
                    (lambda run=run, timeout=timeout: self._start_clock(run, timeout))
                    if timeout
                    else None
                )
                try:
                    outcome = slot.runner.run(job, run.cancel)
                finally:
                    attempt_clock.start = None
                with self.lock:
                    if run.abandoned or slot.generation != gen:
                        return  # the monitor reported its timeout and replaced this thread
                    run.finishing = True
                duration = time.monotonic() - run.started
                w.attempt_done(job, outcome, duration)
                job = self._report(slot, job, outcome, duration)
                with self.lock:
                    slot.run = None

    def _went_idle(self) -> None:
        with self.idle_changed:
            self.idle += 1
            self.idle_changed.notify()
            all_idle = self.idle == len(self.slots)
        if all_idle and self.w.burst:
            # In burst mode the last busy slot going idle may mean "drained": let the
            # dispatcher look now rather than at its next timeout.
            self.w.dispatcher.unblock()

    def _report(
        self, slot: Slot, job: Claimed, outcome: Outcome, duration: float
    ) -> Claimed | None:
        """Record the outcome and, unless stopping, claim this slot's next job with it.
        Only the first queue is claimed from here; the dispatcher serves the others, so
        the queues' order is kept."""
        w = self.w
        n = 0 if w.stopping.is_set() or job.queue != w.queues[0] else w.take(1)
        req = w.claim_request(n) if n else None

        sends = 0

        def report() -> Completion:
            nonlocal sends
            sends += 1
            if slot.conn is None:
                slot.conn = w.broker.lane()
            return w.broker.complete(
                job, outcome, req, slot=slot.index, conn=slot.conn, resent=sends > 1
            )

        result = w.retry(report, forever=True)
        w.untake(n - len(result.claimed))
        w.attempt_reported(job, outcome, result.outcome)
        w.done_one()
        log.log(
            logging.INFO if outcome.kind == "ok" else logging.WARNING,
            "%s",
            attempt_line(job, outcome, result, duration),
        )
        with self.lock:
            self.finished += result.outcome in FINAL
        if result.claimed and w.stopping.is_set():
            w.give_back(result.claimed)  # a stop arrived while the call was in flight
            return None
        return result.claimed[0] if result.claimed else None

    # -- the monitor's side ------------------------------------------------------------------

    def running(self) -> list[Claimed]:
        """Jobs being run, not yet being reported (a report ends the lease anyway)."""
        with self.lock:
            return [
                s.run.job
                for s in self.slots
                if s.run is not None and not s.run.abandoned and not s.run.finishing
            ]

    def cancel(self, job_id: str) -> bool:
        """Stop the attempt of ``job_id`` running here: its cancel flag is set (thread
        slots stop cooperatively) and a process slot's child is terminated."""
        with self.lock:
            found = [
                s
                for s in self.slots
                if s.run is not None
                and s.run.job.id == job_id
                and not s.run.finishing
                and not s.run.cancel.is_set()
            ]
            for slot in found:
                slot.run.cancel.set()  # type: ignore[union-attr]
        for slot in found:
            slot.runner.stop()
        return bool(found)

    def by_slot(self) -> list[tuple[str, float] | None]:
        """Per slot: (job id, when it started, Unix time) or None: for the timeline."""
        now_mono, now = time.monotonic(), time.time()
        with self.lock:
            return [
                (s.run.job.id, now - (now_mono - s.run.started))
                if s.run is not None and not s.run.abandoned
                else None
                for s in self.slots
            ]

    def _start_clock(self, run: Run, timeout: float) -> None:
        with self.lock:
            if run.abandoned:
                return
            run.deadline = time.monotonic() + timeout
        self.w.monitor.wake()

    def overdue(self, now: float) -> tuple[list[tuple[Slot, Run]], list[float]]:
        """Attempts past their deadline (marked abandoned), and the deadlines still ahead."""
        ahead: list[float] = []
        expired: list[tuple[Slot, Run]] = []
        with self.lock:
            for slot in self.slots:
                run = slot.run
                if run is None or run.deadline is None or run.abandoned or run.finishing:
                    continue
                if now >= run.deadline:
                    run.abandoned = True
                    expired.append((slot, run))
                else:
                    ahead.append(run.deadline)
        return expired, ahead

    def replace(self, slot: Slot, run: Run) -> int:
        """The slot's thread is left to its overrunning job; a fresh one takes the slot.
        Returns how many abandoned threads are still running."""
        with self.lock:
            if slot.thread is not None:
                self._abandoned.append((slot.thread, run.job.id))
            slot.run = None
        if not self.w.stopping.is_set():
            self._start(slot)
        return self.abandoned_alive()

    def abandoned_alive(self) -> int:
        with self.lock:
            self._abandoned = [(t, j) for t, j in self._abandoned if t.is_alive()]
            return len(self._abandoned)

    def _abandoned_attempt_alive(self, job_id: str) -> bool:
        if not self._abandoned:  # the common case, without the lock
            return False
        with self.lock:
            return any(j == job_id and t.is_alive() for t, j in self._abandoned)

    # -- stopping --------------------------------------------------------------------------

    def all_idle(self) -> bool:
        with self.lock:
            return self.idle == len(self.slots)

    def busy(self) -> bool:
        with self.lock:
            return any(s.run is not None and not s.run.abandoned for s in self.slots)

    def finishing(self) -> bool:
        with self.lock:
            return any(s.run is not None and s.run.finishing for s in self.slots)

    def abandon_all(self) -> list[Claimed]:
        """After the grace period: runs still going are abandoned (process slots killed);
        their jobs are returned to be put back in line."""
        with self.lock:
            stuck = [s for s in self.slots if s.run is not None and not s.run.finishing]
            runs = [s.run for s in stuck if s.run is not None and not s.run.abandoned]
            for run in runs:
                run.abandoned = True
        for slot in stuck:
            slot.runner.kill()
        return [r.job for r in runs]

    def close(self) -> None:
        for _ in self.slots:
            self.handoff.put(None)
        for slot in self.slots:
            slot.runner.close()
            if slot.conn is not None:
                slot.conn.close()
                slot.conn = None
