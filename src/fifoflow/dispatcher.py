"""The dispatcher: hands jobs to idle slots, greedily and in queue order.

With idle slots it claims for as many as are idle, queue by queue in the order the worker
lists them. When nothing is ready it blocks in ``BLPOP`` on the wake lists of its queues
and pools (every push leaves a token there), with a claim pipelined behind the ``BLPOP``
on the same connection, so a push reaches an idle slot in one server hop. The wait never
outlasts the next due job or lease expiry, nor half the socket timeout (so a timeout
always means a lost reply, never an idle wait); a stop ends it with ``CLIENT UNBLOCK``.

A token taken for a queue that the dispatcher then did not claim from (its slots were
filled from an earlier queue) is handed back, and claims made after a wake-up leave a
token while jobs stay ready: no job waits while a worker that could run it is idle.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import redis

from . import keys
from .records import Claim, Claimed, ClaimRequest
from .resilience import RETRYABLE, Stopping

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("fifoflow.worker")

#: Longest an idle dispatcher blocks before it looks around again (a safety net only:
#: pushes, due jobs and shutdown all wake it earlier).
MAX_BLOCK = 5.0


class Dispatcher:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.wake_keys = [keys.wake(q, p) for q in worker.queues for p in worker.pools]
        self._queue_of = {keys.wake(q, p): q for q in worker.queues for p in worker.pools}
        self.max_block = min(MAX_BLOCK, worker.settings.socket_timeout / 2)
        # BLPOP needs a connection of its own, whose id CLIENT UNBLOCK can name.
        self._conn: redis.Connection = worker.broker.client.connection_pool.get_connection()
        self._conn_id: int | None = None
        self._conn.register_connect_callback(self._connected)  # type: ignore[no-untyped-call]
        self._connected(self._conn)

    def _connected(self, conn: Any) -> None:
        # A reconnect (after an outage) gets a new id; CLIENT UNBLOCK must name the new one.
        conn.send_command("CLIENT", "ID")
        self._conn_id = int(conn.read_response())

    def unblock(self) -> None:
        """End a blocking wait now (thread-safe)."""
        if self._conn_id is not None:
            with contextlib.suppress(*RETRYABLE):
                self.w.broker.client.client_unblock(self._conn_id)

    def close(self) -> None:
        self._conn.disconnect()  # type: ignore[no-untyped-call]

    def run(self, burst: bool) -> None:
        """Until the worker stops (or, with ``burst``, the queues are drained)."""
        w = self.w
        woken: list[Claimed] = []  # claimed in the same round trip as the wake-up
        popped: str | None = None
        while not w.stopping.is_set():
            idle = w.slots.wait_idle()
            if w.stopping.is_set():
                w.give_back(woken)
                break
            # Slots only ever become idle while the dispatcher blocks, so the jobs claimed
            # then still fit.
            got, woken = woken, []
            want = len(got) + w.take(idle - len(got))
            if want == 0:  # --max-jobs reached: the last report stops the worker
                w.stopping.wait(0.2)
                continue
            soonest = self.max_block
            # The claim pipelined behind the wait was the first queue's.
            claimed_from = {w.queues[0]} if popped is not None else set()
            for q in w.queues:
                if len(got) >= want:
                    break
                req = w.claim_request(want - len(got), refill=True)
                claim = self._claim(q, req)
                claimed_from.add(q)
                got += claim.jobs
                if claim.next_event >= 0:
                    soonest = min(soonest, claim.next_event)
            if popped is not None and self._queue_of[popped] not in claimed_from:
                w.retry.once(lambda key=popped: w.broker.hand_back(key))  # type: ignore[misc]
            popped = None
            if got:
                w.slots.hand_out(got)
            if len(got) < want:
                missing = want - len(got)
                if burst and self._drained():
                    w.untake(missing)
                    log.info("worker %s: queues drained, leaving (burst)", w.name)
                    break
                popped, woken = self._block(min(soonest, 1.0) if burst else soonest, missing)
                w.untake(missing - len(woken))

    def _claim(self, queue: str, req: ClaimRequest, resent: bool = False) -> Claim:
        """The claim, retried until it lands; each retry says so (it may have run)."""
        sends = int(resent)

        def claim() -> Claim:
            nonlocal sends
            sends += 1
            return self.w.broker.claim(queue, req, resent=sends > 1)

        try:
            return self.w.retry(claim)
        except Stopping:
            return Claim(-1, [])

    def _block(self, timeout: float, n: int) -> tuple[str | None, list[Claimed]]:
        """Wait for a wake token with a claim of up to ``n`` jobs of the first queue behind
        it. Whatever that claim took goes straight back if the worker is stopping."""
        w = self.w
        q = w.queues[0]
        req = w.claim_request(n, refill=True)
        if w.stopping.is_set():
            return None, []
        try:
            popped, claim = w.broker.wait_and_claim(
                self._conn, self.wake_keys, max(timeout, 0.001), q, req
            )
            w.health.recovered()
        except RETRYABLE as e:
            # The claim may have run with its reply lost: the same request again returns
            # what it took (or claims now), never more.
            popped = None
            if w.stopping.is_set():
                claim = Claim(-1, [])
            else:
                w.health.failed(e)
                claim = self._claim(q, req, resent=True)
        if claim.jobs and w.stopping.is_set():
            w.give_back(claim.jobs)
            return None, []
        return popped, claim.jobs

    def _drained(self) -> bool:
        w = self.w
        if not w.slots.all_idle():
            return False
        for q in w.queues:
            waiting = w.retry.once(lambda q=q: w.broker.waiting(q, w.pools))  # type: ignore[misc]
            if waiting is None or waiting > 0:
                return False
        return True
