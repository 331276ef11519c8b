"""The worker: N slots kept busy greedily, in queue order, without losing a job.

This module is the worker's lifecycle: checks at start, signals, running the roles,
draining, stopping. The roles, each in its own module and thread(s):

* ``slots``: run jobs, and report each outcome together with the claim of the next job;
* ``dispatcher`` (the thread that called ``run``): hands jobs to idle slots, blocks on
  wake tokens when there is nothing to do;
* *services*, background loops under ``resilience.supervised``: the ``monitor``
  (heartbeats, leases, timeouts, housekeeping) and the ``deathwatch`` (dead workers'
  jobs back in line within a second), and with ``scheduler`` the ``scheduler`` (fires
  the queues' schedules). A new background duty is one more service.

Every server call goes through the broker under one error policy (``resilience``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Protocol

from .allowlist import Resolver, import_modules
from .broker import Broker
from .deathwatch import CancelWatch, DeathWatch
from .dispatcher import Dispatcher
from .errors import UsageError
from .execution import Call, Runner, ThreadRunner, direct_call
from .monitor import MetricsEndpoint, Monitor
from .procslot import ProcessRunner, Setup
from .records import Claimed, ClaimRequest, Outcome, nonce
from .resilience import Health, Retrier, Stopping, supervised
from .resources import Capacity, check_capacity
from .settings import Settings, get_settings
from .slots import Slots
from .validation import validate_module, validate_name

log = logging.getLogger("fifoflow.worker")

#: ``run()``'s return value when the worker stopped to shed abandoned threads: start it
#: again in a fresh process (the CLI re-executes itself).
EXIT_RESTART = 3


class Service(Protocol):
    name: str

    def run(self) -> None: ...


class Worker:
    """Runs jobs whose targets lie inside ``modules`` from ``queues`` (first listed first)."""

    #: How each job's function is called (Prefect mode: as a child flow run).
    call: Call = staticmethod(direct_call)
    #: True if ``call`` (and the call factory's call of ``process_setup``) has a set-up
    #: that is not the job's time and starts the slot's timeout itself when it ends
    #: (``execution.timeout_starts_now``).
    call_starts_clock = False

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        modules: Iterable[str] = (),
        concurrency: int | None = None,
        pools: Sequence[str] | None = None,
        *,
        name: str | None = None,
        url: str | None = None,
        lease: float | None = None,
        grace: float = 30.0,
        processes: bool = False,
        max_lost: int | None = None,
        max_abandoned: int | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        max_jobs: int | None = None,
        scheduler: bool = False,
        capacity: Capacity | None = None,
        strict_fifo: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.modules = tuple(validate_module(m) for m in modules)
        if not self.modules:
            raise UsageError("a worker needs at least one module its targets may come from")
        #: What it has (GPU ids, cpu, mem_gb, ...): the server picks what fits. None: a
        #: plain worker, ``concurrency`` slots, declared amounts not looked at.
        self.capacity = capacity
        self.strict_fifo = strict_fifo
        if concurrency is None:
            concurrency = capacity.default_slots() if capacity is not None else 1
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
        self.concurrency = concurrency
        self.pools = [validate_name("pool", p) for p in (pools or ["default"])]
        self.queues = [validate_name("queue", q) for q in (queues or [self.settings.queue])]
        if capacity is not None:
            check_capacity(capacity, self.queues, processes)
        elif strict_fifo:
            raise UsageError("--strict-fifo orders jobs by resources: declare capacity too")
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        if any(c.isspace() for c in self.name) or not self.name:
            raise UsageError(f"invalid worker name {self.name!r}: no spaces")
        lease_s = self.settings.lease_seconds if lease is None else lease
        ok = isinstance(lease_s, int | float) and not isinstance(lease_s, bool)
        if not (ok and 0 < lease_s < 1e9):  # NaN and inf too
            raise UsageError(f"lease must be a positive number of seconds, not {lease_s!r}")
        self.lease = float(lease_s)
        self.grace = grace
        if max_jobs is not None and (
            isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1
        ):
            raise UsageError(f"max_jobs must be a positive integer, not {max_jobs!r}")
        #: Stop (exit 0) once this many jobs were run; None: no limit.
        self.max_jobs = max_jobs
        self._taken = 0  # jobs claimed towards max_jobs
        self._quota_lock = threading.Lock()
        self.max_abandoned = max_abandoned or self.settings.max_abandoned
        self.processes = processes
        import_modules(self.modules)  # fail fast, before touching the server
        self.broker = Broker.connect(url, settings=self.settings, name=self.name, max_lost=max_lost)

        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.health = Health(f"worker {self.name}")
        self.retry = Retrier(self.health, self.stopping, self.stopped)
        self.burst = False
        self.restart_reason: str | None = None
        self.processed = 0
        self.started_at = time.time()
        self._signals = 0
        resolver = Resolver(self.modules)
        self.slots = Slots(self, lambda: self.make_runner(resolver))
        self.dispatcher = Dispatcher(self)
        self.monitor = Monitor(self)
        self.services: list[Service] = [self.monitor, DeathWatch(self), CancelWatch(self)]
        if scheduler:  # fires the schedules of its queues (any number of workers may)
            from .scheduler import Scheduler

            self.services.append(Scheduler(self))
        self.metrics = (
            None if metrics_port is None else MetricsEndpoint(self, metrics_host, metrics_port)
        )

    def attempt_done(self, job: Claimed, outcome: Outcome, duration: float) -> None:
        """Called by a slot after each attempt, before its report (a hook for modes that
        keep their own account, such as Prefect's summary)."""

    def claim_request(self, n: int, refill: bool = False) -> ClaimRequest:
        """A claim of up to ``n`` jobs for this worker (by resources, if it has capacity)."""
        return ClaimRequest(
            self.name, n, self.pools, self.lease, nonce(), refill, self.capacity is not None
        )

    def attempt_reported(self, job: Claimed, outcome: Outcome, result: str) -> None:
        """Called by a slot once an attempt's outcome is recorded: ``result`` is what the
        server made of it (succeeded, retry, dead, cancelled or stale). A hook."""

    def process_setup(self) -> Setup | None:
        """What a process slot's child runs its attempts with (``procslot``'s call factory
        and config), asked each time one starts; None: plain calls. A hook."""
        return None

    def make_runner(self, resolver: Resolver) -> Runner:
        if self.processes:
            pinned = self.capacity is not None
            return ProcessRunner(
                self.modules, self.broker.url, pinned, self.process_setup, self.call_starts_clock
            )
        return ThreadRunner(resolver, self.call, self.broker.url)

    # -- public ----------------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work until stopped (or, with ``burst``, until the queues are drained).
        Returns 0, or ``EXIT_RESTART`` after stopping to shed abandoned threads."""
        self.burst = burst
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.monitor.register()
        log.info(
            "worker %s: queues %s, pools %s, %d slot(s)%s%s, modules %s",
            self.name,
            ",".join(self.queues),
            ",".join(self.pools),
            self.concurrency,
            " (processes)" if self.processes else "",
            "" if self.capacity is None else f", capacity {self.capacity.describe()}",
            ",".join(self.modules),
        )
        if self.metrics is not None:
            self.metrics.start()
        self.slots.start()
        threads = [supervised(s.name, s.run, self.health, self.stopped) for s in self.services]
        for t in threads:
            t.start()
        try:
            self._dispatch(burst)
        finally:
            self._shutdown()
            for t in threads:
                t.join(timeout=2)
        return 0 if self.restart_reason is None else EXIT_RESTART

    def stop(self) -> None:
        """Stop claiming; running jobs finish within the grace period. Thread-safe."""
        if not self.stopping.is_set():
            log.info("worker %s: stopping (grace %.0fs)", self.name, self.grace)
            self.stopping.set()
        self.monitor.wake()
        self.slots.wake_waiters()
        self.dispatcher.unblock()

    def request_restart(self, reason: str) -> None:
        """Drain and stop, so a fresh process can take over (see ``EXIT_RESTART``)."""
        if self.restart_reason is None:
            self.restart_reason = reason
            log.warning("worker %s: %s; draining to start afresh", self.name, reason)
        self.stop()

    def take(self, n: int) -> int:
        """How many of ``n`` more jobs this worker may claim (``max_jobs``)."""
        if self.max_jobs is None:
            return n
        with self._quota_lock:
            k = max(0, min(n, self.max_jobs - self._taken))
            self._taken += k
            return k

    def untake(self, n: int) -> None:
        """Claims that got no job give their share back."""
        if self.max_jobs is not None and n > 0:
            with self._quota_lock:
                self._taken -= n

    def done_one(self) -> None:
        """A job's outcome is recorded; the last of ``max_jobs`` stops the worker."""
        self.processed += 1
        if self.max_jobs is not None and self.processed >= self.max_jobs:
            log.info("worker %s: ran %d job(s) (--max-jobs); stopping", self.name, self.processed)
            self.stop()

    def cancel_running(self, job_id: str) -> None:
        """A running job was cancelled: stop its attempt here, if it runs here."""
        if self.slots.cancel(job_id):
            log.warning("worker %s: job %s cancelled while running; stopping it", self.name, job_id)
            self.cancelling(job_id)

    def cancelling(self, job_id: str) -> None:
        """Called once a running job's stop began (a hook: Prefect mode cancels the run)."""

    def give_back(self, jobs: Sequence[Claimed], delay: float = 0.0) -> None:
        """Claimed jobs that will not run here back to their places in line."""
        for q in {j.queue for j in jobs}:
            mine = [j for j in jobs if j.queue == q]
            try:
                self.retry(lambda q=q, mine=mine: self.broker.release(q, mine, delay))  # type: ignore[misc]
            except Stopping:
                log.warning("worker %s: %d job(s) left to their leases", self.name, len(mine))

    # -- running -------------------------------------------------------------------------

    def _dispatch(self, burst: bool) -> None:
        """The dispatcher in this thread; should it fail (a bug), it is restarted."""
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self.dispatcher.run(burst)
                return
            except Exception as e:
                self.health.thread_died("dispatcher", e)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)

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
        self.stopping.set()
        deadline = time.monotonic() + self.grace
        while self.slots.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = self.slots.abandon_all()
        if left:
            log.warning(
                "worker %s: %d job(s) still running after the grace period; "
                "putting them back in line",
                self.name,
                len(left),
            )
            self.give_back(left)
        # Outcomes being reported are let through: a result is never dropped on purpose.
        finish_by = time.monotonic() + 10
        while self.slots.finishing() and time.monotonic() < finish_by:
            time.sleep(0.02)
        self.slots.close()
        self.stopped.set()
        self.monitor.wake()
        self.retry.once(lambda: self.broker.unregister_worker(self.name))
        if self.capacity is not None:
            self.monitor.register_capacity(withdraw=True)
        log.info(
            "worker %s: stopped after %d job(s) (%d attempt(s))",
            self.name,
            self.slots.finished,
            self.processed,
        )
        self.dispatcher.close()
        if self.metrics is not None:
            self.metrics.stop()
