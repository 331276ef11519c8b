"""Watching other processes: fast death detection, and cancels of running jobs.

Fast death detection: a worker killed outright gets its jobs back in line within about
a second, long before their leases run out.

A dead worker is usually visible at once: the server closes its connections (every
connection of a worker is named ``ffw:NAME``, so ``CLIENT LIST`` shows who is connected),
and on the same host its pid is gone. One live worker at a time (the holder of a short
lock) looks every quarter second; a registered worker with no connection in two looks in
a row, or whose pid is gone, is dead: ``reap_worker.lua`` puts its jobs back at their
places, each counting as a lost lease. Leases stay the backstop: for partitions, for
servers that refuse ``CLIENT LIST``, and right after a server restart (when nobody is
connected yet, nothing is judged).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from . import keys
from .resilience import RETRYABLE

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("fifoflow.worker")

#: Seconds between two looks.
INTERVAL = 0.25
#: A server up for less than this has just restarted: its clients are still reconnecting.
MIN_UPTIME = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class DeathWatch:
    name = "fifoflow-deathwatch"

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.host = socket.gethostname()
        self._suspects: set[str] = set()
        self._client_list = True
        self._wake = threading.Event()
        self._held = False
        #: The other workers' queues at the last full look, and how many workers there were.
        self._queues: list[str] | None = None
        self._fleet = -1

    def run(self) -> None:
        w = self.w
        while not w.stopping.wait(INTERVAL):
            self._held = bool(w.retry.once(self._lock))
            if self._held:
                self.look()
            else:
                self._suspects.clear()
                self._queues = None

    def _lock(self) -> bool:
        return self.w.broker.watch_lock(self.w.name, 2 * INTERVAL, self._held)

    def look(self) -> None:
        w = self.w
        # Only a dead worker's running jobs need anyone: while nothing runs in the queues of
        # the same fleet as last time, a look costs one round trip of counts, not a read of
        # every worker's registration.
        if self._queues is not None and not self._suspects:
            fleet, running = w.retry.once(lambda: self._counts(self._queues or [])) or (-1, 1)
            if fleet == self._fleet and not running:
                return
        workers = w.retry.once(w.broker.live_workers) or []
        others = [info for info in workers if info.get("name") != w.name]
        queues = sorted({q for info in others for q in info.get("queues", [])})
        self._queues, self._fleet = queues, len(workers)
        if not others or not w.retry.once(lambda: w.broker.running_count(queues)):
            self._suspects.clear()
            return
        answered, connected = self._connected() if self._client_list else (True, None)
        if not answered:  # a server did not answer: judge nobody by it this time
            return
        if connected is None and self._client_list:
            self._client_list = False
            log.info(
                "worker %s: the server refuses CLIENT LIST; leases alone find dead workers", w.name
            )
        suspects: set[str] = set()
        for info in others:
            name = str(info["name"])
            if info.get("host") == self.host and not pid_alive(int(info.get("pid", 0))):
                self.bury(info, "its process is gone")
            elif connected is not None and name not in connected:
                if name in self._suspects and self._server_settled():
                    self.bury(info, "its connections closed")
                else:
                    suspects.add(name)
        self._suspects = suspects

    def _counts(self, queues: list[str]) -> tuple[int, int]:
        return self.w.broker.fleet_size(), self.w.broker.running_count(queues)

    def _connected(self) -> tuple[bool, set[str] | None]:
        """Whether every master answered, and who is connected (to any master; None: a
        server refuses CLIENT LIST)."""
        try:
            connected = self.w.broker.connected_workers()
        except RETRYABLE as e:
            self.w.health.failed(e)
            return False, None
        self.w.health.recovered()
        return True, connected

    def _server_settled(self) -> bool:
        uptime = self.w.retry.once(self.w.broker.server_uptime)
        return uptime is not None and uptime >= MIN_UPTIME

    def bury(self, info: dict[str, Any], why: str) -> None:
        w = self.w
        name = str(info["name"])
        back: list[str] = []
        for q in info.get("queues", []):
            ids = w.retry.once(lambda q=q: w.broker.reap_worker(q, name))  # type: ignore[misc]
            back += ids or []
        w.retry.once(lambda: w.broker.unregister_worker(name))
        log.log(
            logging.WARNING if back else logging.INFO,
            "worker %s is gone (%s): %d job(s) back in line%s",
            name,
            why,
            len(back),
            f" ({', '.join(back)})" if back else "",
        )


class CancelWatch:
    """Hears of running jobs cancelled (``fifoflow cancel ID``: the script publishes the id
    on its queue's channel) and stops them here at once. The heartbeat is the backstop:
    it reports cancelled jobs too, should a message be missed while reconnecting."""

    name = "fifoflow-cancelwatch"

    def __init__(self, worker: Worker) -> None:
        self.w = worker

    def run(self) -> None:
        w = self.w
        channels = [keys.queue_key(q, keys.Key.CANCELS) for q in w.queues]
        while not w.stopping.is_set():
            pubsub = w.retry.once(lambda: self._subscribe(channels))
            if pubsub is None:
                w.stopping.wait(1.0)
                continue
            try:
                while not w.stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        w.cancel_running(str(message["data"]))
            except RETRYABLE as e:
                w.health.failed(e)
                w.stopping.wait(1.0)
            finally:
                with contextlib.suppress(*RETRYABLE):
                    pubsub.close()

    def _subscribe(self, channels: list[str]) -> Any:
        pubsub = self.w.broker.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(*channels)
        return pubsub
