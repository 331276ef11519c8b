"""The broker's producing side: pushes (one script call up to ``BATCH`` jobs; more are
staged batch by batch and made visible in one call, or not at all) and back-pressure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from . import keys
from .errors import (
    JobNotFound,
    QueueFull,
    ServerOutOfMemory,
    UsageError,
    is_oom,
    out_of_memory,
)
from .keys import Key
from .records import Pushed, PushSpec, nonce
from .topology import Topology, ride

#: Jobs per script call of a push; a push of more is staged and committed at once.
BATCH = 5000


class Producing:
    client: redis.Redis
    policy: Any  # broker.Policy
    _registered: set[str]
    topology: Topology
    failover_seconds: float
    _script: Callable[..., tuple[list[Any], Any]]

    def push(
        self,
        queue: str,
        spec: PushSpec,
        params: Sequence[str],
        job_keys: Sequence[str | None],
        on_batch: Any = None,
    ) -> list[Pushed]:
        """Add jobs (params: JSON texts), all or none. Up to ``BATCH`` jobs are one script
        call; more are staged batch by batch, invisible, and committed in one call."""
        pairs: list[str] = []
        for p, k in zip(params, job_keys, strict=True):
            pairs += [p, k or ""]
        self._register_queue(queue)
        suffix = keys.id_suffix(queue)
        if len(params) <= BATCH:
            args = [nonce(), "0", suffix, self.policy.ttl, *spec.args(), *pairs]
            _, reply = self._script("push", queue, args, resend_at=1)
            if on_batch is not None:
                on_batch(len(params))
            return self._pushed(queue, reply)
        push_id = nonce()
        for batch, start in enumerate(range(0, len(pairs), 2 * BATCH)):
            chunk = pairs[start : start + 2 * BATCH]
            args = [push_id, str(batch), "0", suffix, *spec.args(), *chunk]
            self._script("stage", queue, args, resend_at=2)
            if on_batch is not None:
                on_batch(len(chunk) // 2)
        keyed = "1" if any(job_keys) else "0"
        args = [push_id, "0", self.policy.ttl, *spec.args(), keyed]
        _, reply = self._script("commit", queue, args, resend_at=1)
        if reply[0] == "GONE":
            raise UsageError("the push was staged for over an hour and expired; push again")
        return self._pushed(queue, reply)

    def _register_queue(self, queue: str) -> None:
        """``ff:queues`` lists every queue (for ``status``); added to once per broker."""
        if queue in self._registered:
            return
        try:
            ride(self.topology, self.failover_seconds, lambda: self.client.sadd(keys.QUEUES, queue))
        except redis.ResponseError as e:
            if is_oom(e):
                raise ServerOutOfMemory(out_of_memory("push")) from None
            raise
        self._registered.add(queue)

    def _pushed(self, queue: str, reply: Sequence[Any]) -> list[Pushed]:
        if reply[0] == "FULL":
            raise QueueFull(queue, int(reply[1]), int(reply[2]), int(reply[3]))
        if reply[0] == "NOPARENT":
            parent_queue, parent = reply[1].split("/", 1)
            raise JobNotFound(parent, f"in queue {parent_queue!r} (a parent of this push)")
        if reply[0] == "ALIAS":
            raise UsageError(f"job id {reply[1]!r} is taken in queue {queue!r}")
        # runs of consecutive ids: first id, how many, new, status (add_run in _common.lua)
        out: list[Pushed] = []
        for i in range(1, len(reply), 4):
            first, count, new, status = (
                reply[i],
                int(reply[i + 1]),
                reply[i + 2] == "1",
                reply[i + 3],
            )
            rank, suffix = int(first[:14], 16), first[14:]
            out += [Pushed(f"{r:014x}{suffix}", new, status) for r in range(rank, rank + count)]
        return out

    def set_max_length(self, queue: str, max_length: int | None) -> None:
        if max_length is None:
            self.client.hdel(keys.queue_key(queue, Key.META), "max_length")
        else:
            self.client.hset(keys.queue_key(queue, Key.META), "max_length", str(max_length))
