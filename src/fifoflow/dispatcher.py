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

import logging
import random
from typing import TYPE_CHECKING

from . import keys
from .records import Claim, Claimed, ClaimRequest
from .resilience import RETRYABLE, Stopping
from .wakeups import Wakeups

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("fifoflow.worker")

#: Longest an idle dispatcher blocks before it looks around again (a safety net only:
#: pushes, due jobs and shutdown all wake it earlier).
MAX_BLOCK = 5.0


class Dispatcher:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._queue_of = {keys.wake(q, p): q for q in worker.queues for p in worker.pools}
        self.max_block = min(MAX_BLOCK, worker.settings.socket_timeout / 2)
        # BLPOP needs connections of its own (one per node), whose ids CLIENT UNBLOCK names.
        self.wakeups = Wakeups(worker)
        #: Claims whose reply was lost while their queue's node failed over, by queue: sent
        #: again (they return what they took) before that queue's next claim.
        self._unsure: dict[str, ClaimRequest] = {}
        self._failures = 0  # waits in a row that failed (a back-off before the next)

    def unblock(self) -> None:
        """End a blocking wait now (thread-safe)."""
        self.wakeups.unblock()

    def close(self) -> None:
        self.wakeups.close()

    def run(self, burst: bool) -> None:
        """Until the worker stops (or, with ``burst``, the queues are drained)."""
        w = self.w
        woken: list[Claimed] = []  # claimed in the same round trip as the wake-up
        popped: list[str] = []  # the wake lists whose tokens woke it
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
            claimed_from = {w.queues[0]} if popped else set()
            # Claimed from even if nothing is ready there: a queue whose token woke it (the
            # claim drops stale tokens) and one with a claim to send again.
            must = {self._queue_of[k] for k in popped} | set(self._unsure)
            for q, due in zip(w.queues, self._due_in(), strict=True):
                if len(got) >= want:
                    break
                if due != 0 and q not in must:  # nothing to take there now
                    soonest = soonest if due < 0 else min(soonest, due)
                    continue
                req = w.claim_request(want - len(got), refill=True)
                claim = self._claim(q, req)
                claimed_from.add(q)
                got += claim.jobs
                if claim.next_event >= 0:
                    soonest = min(soonest, claim.next_event)
            for key in popped:
                if self._queue_of[key] not in claimed_from:
                    w.retry.once(lambda key=key: w.broker.hand_back(key))  # type: ignore[misc]
            popped = []
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

    def _due_in(self) -> list[float]:
        """Per queue, when a claim could take a job there (0: now). With many queues, one
        round trip of reads spares a script call per empty queue; with one, or when the
        reads fail, every queue is claimed from."""
        w = self.w
        if len(w.queues) > 1:
            due = w.retry.once(lambda: w.broker.due_in(w.queues, w.pools))
            if due is not None:
                return due
        return [0.0] * len(w.queues)

    def _claim(self, queue: str, req: ClaimRequest, resent: bool = False) -> Claim:
        """The claim, retried until it lands; each retry says so (it may have run). On a
        cluster, a worker of several queues does not wait on one whose node fails: the
        request is kept and sent again (returning what it took, extras going back to their
        places) before that queue's next claim, and the other queues go on."""
        w = self.w
        unsure = self._unsure.pop(queue, None)
        if unsure is not None:
            found = self._send(queue, unsure, True)
            if found is None or found.jobs:
                jobs = found.jobs if found else []
                if len(jobs) > req.n:
                    w.give_back(jobs[req.n :])
                return Claim(found.next_event if found else -1, jobs[: req.n])
        return self._send(queue, req, resent) or Claim(-1, [])

    def _send(self, queue: str, req: ClaimRequest, resent: bool) -> Claim | None:
        w = self.w
        sends = int(resent)

        def claim() -> Claim:
            nonlocal sends
            sends += 1
            return w.broker.claim(queue, req, resent=sends > 1)

        if not (w.broker.topology.cluster and len(w.queues) > 1):
            try:
                return w.retry(claim)
            except Stopping:
                return Claim(-1, [])
        try:
            found = claim()
        except RETRYABLE as e:
            w.health.failed(e)
            self._unsure[queue] = req
            return None
        w.health.recovered()
        return found

    def _block(self, timeout: float, n: int) -> tuple[list[str], list[Claimed]]:
        """Wait for a wake token with a claim of up to ``n`` jobs of the first queue behind
        it. Whatever that claim took goes straight back if the worker is stopping."""
        w = self.w
        q = w.queues[0]
        req = w.claim_request(n, refill=True)
        if w.stopping.is_set():
            return [], []
        popped: list[str] = []
        try:
            popped, claim = self.wakeups.wait(max(timeout, 0.001), req)
            w.health.recovered()
            self._failures = 0
        except RETRYABLE as e:
            # The claim may have run with its reply lost: the same request again returns
            # what it took (or claims now), never more.
            if w.stopping.is_set():
                claim = Claim(-1, [])
            else:
                w.health.failed(e)
                w.stopping.wait(min(0.05 * 2**self._failures, 1.0) * random.uniform(0.5, 1))
                self._failures = min(self._failures + 1, 10)
                claim = self._claim(q, req, resent=True)
        if claim.jobs and w.stopping.is_set():
            w.give_back(claim.jobs)
            return [], []
        return popped, claim.jobs

    def _drained(self) -> bool:
        w = self.w
        if not w.slots.all_idle():
            return False
        stuck = 0  # ready jobs that a claim with all of this worker's capacity free left
        for q in w.queues:
            waiting = w.retry.once(lambda q=q: w.broker.waiting(q, w.pools))  # type: ignore[misc]
            if waiting is None:
                return False
            if waiting > 0 and w.capacity is not None:
                # Nothing runs or awaits a retry anywhere, and a claim with everything free
                # took nothing: what is queued can never start here, so burst is done.
                ready = w.retry.once(lambda q=q: w.broker.queued_by_pool(q, w.pools))  # type: ignore[misc]
                if ready is None or sum(ready.values()) != waiting:
                    return False
                stuck += waiting
            elif waiting > 0:
                return False
        if stuck:
            log.warning(
                "worker %s: %d queued job(s) need more than this worker has; leaving (burst)",
                w.name,
                stuck,
            )
        return True
