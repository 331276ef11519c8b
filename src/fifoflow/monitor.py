"""The monitor: a worker's heartbeat (lease renewal and its registry entry, with its
health), timeouts of thread-slot jobs, and periodic housekeeping of its queues; and the
worker's own Prometheus endpoint (``--metrics-port``)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .records import Outcome

if TYPE_CHECKING:
    from .slots import Run, Slot
    from .worker import Worker

log = logging.getLogger("fifoflow.worker")

#: Seconds between housekeeping calls (trimming finished records past their TTL).
MAINTAIN_EVERY = 30.0
#: While stopping, how often a blocked dispatcher is nudged (a stop that raced its wait).
NUDGE_EVERY = 0.2


class Monitor:
    name = "fifoflow-monitor"

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look at the deadlines now (a job with a timeout just started)."""
        self._wake.set()

    def run(self) -> None:
        w = self.w
        interval = w.lease / 3
        next_beat = time.monotonic() + interval
        next_maintain = time.monotonic() + MAINTAIN_EVERY
        while not w.stopped.is_set():
            now = time.monotonic()
            ahead = self._check_timeouts(now)
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + interval
            if now >= next_maintain:
                for q in w.queues:
                    w.retry.once(lambda q=q: w.broker.maintain(q))  # type: ignore[misc]
                next_maintain = now + MAINTAIN_EVERY
            wait = min([next_beat - now, *[d - now for d in ahead]])
            if w.stopping.is_set():
                w.dispatcher.unblock()
                wait = min(wait, NUDGE_EVERY)
            self._wake.wait(max(wait, 0.005))
            self._wake.clear()

    def heartbeat(self) -> None:
        """Renew the leases of running jobs, and the worker's registry entry."""
        w = self.w
        running = w.slots.running()
        for q in w.queues:
            mine = [j for j in running if j.queue == q]
            reply = w.retry.once(lambda q=q, mine=mine: w.broker.extend(q, mine, w.lease))  # type: ignore[misc]
            lost, cancelled = reply or ([], [])
            # A job that finished while the call was under way is not lost, just done.
            for job_id in set(lost) & {j.id for j in w.slots.running()}:
                log.warning(
                    "job %s: lease lost to another worker; its outcome will be refused", job_id
                )
            for job_id in cancelled:  # the cancel watch may have missed it (a reconnect)
                w.cancel_running(job_id)
        self.register(running)

    def register(self, running: list[Any] | None = None) -> None:
        w = self.w
        info = {
            "name": w.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(w.queues),
            "pools": list(w.pools),
            "concurrency": w.concurrency,
            "running": [j.id for j in (running or [])],
            "slots": w.slots.by_slot(),
            "processed": w.processed,
            "started_at": w.started_at,
            "heartbeat": time.time(),
            "health": w.health.snapshot(),
        }
        if w.capacity is not None:
            info["capacity"] = w.capacity.describe()
        w.retry.once(lambda: w.broker.register_worker(info, w.lease))
        if w.capacity is not None:
            self.register_capacity()

    def register_capacity(self, withdraw: bool = False) -> None:
        """The capacity record in the queue's slot, renewed with each heartbeat."""
        w = self.w
        cap = w.capacity
        if cap is None:
            return
        ttl = 0.0 if withdraw else w.lease
        w.retry.once(
            lambda: w.broker.register_capacity(
                w.queues[0],
                w.name,
                cap,
                w.concurrency,
                w.pools,
                socket.gethostname(),
                w.strict_fifo,
                ttl,
            )
        )

    def _check_timeouts(self, now: float) -> list[float]:
        """Fail overrunning thread-slot attempts; return the deadlines still ahead."""
        expired, ahead = self.w.slots.overdue(now)
        for slot, run in expired:
            self._time_out(slot, run)
        return ahead

    def _time_out(self, slot: Slot, run: Run) -> None:
        w = self.w
        job = run.job
        outcome = Outcome("fail", f"TimeoutError: job exceeded its timeout of {job.timeout:g}s")
        result = w.retry(lambda: w.broker.complete(job, outcome, slot=slot.index), forever=True)
        log.warning("job %s %s timed out (%s)", job.id, job.target, result.outcome)
        w.done_one()
        alive = w.slots.replace(slot, run)
        w.health.abandoned = alive
        if alive >= w.max_abandoned:
            w.request_restart(
                f"{alive} abandoned thread(s) still running (jobs past their timeout; "
                f"--max-abandoned {w.max_abandoned})"
            )


class MetricsEndpoint:
    """``/metrics`` of the worker's queues on ``host:port`` (loopback unless told
    otherwise), served by ``prometheus_client`` from a thread of its own."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        self.w, self.host, self.port = worker, host, port
        self._server: Any = None

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from .metrics import FifoflowCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(FifoflowCollector(self.w.broker, self.w.queues))
        self._server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        self.port = self._server.server_port
        log.info("worker %s: metrics on http://%s:%d/metrics", self.w.name, self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
