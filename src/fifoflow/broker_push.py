"""The broker's producing side: pushes (one script call up to ``BATCH`` jobs; more are
staged batch by batch and made visible in one call, or not at all), back-pressure, and the
bridge from a raw Redis list (``bridge.lua``)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import repeat
from typing import Any

import redis

from . import keys, scripts
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
#: A staged push that maintain.lua dropped before its commit.
STAGE_EXPIRED = "the push was staged for over an hour and expired; push again"

log = logging.getLogger(__name__)


class _Batches:
    """The ``stage.lua`` calls of one push. A call's arguments are built (its params
    encoded, if they are ``EncodedParams``) when it is about to be sent, so while the
    server stages one batch the client builds the next."""

    def __init__(
        self,
        push_id: str,
        suffix: str,
        spec: PushSpec,
        params: Sequence[str],
        job_keys: Sequence[str | None] | None,
    ) -> None:
        self.push_id, self.params, self.job_keys = push_id, params, job_keys
        self.rest = ["0", suffix, *spec.args(), "0" if job_keys is None else "1"]
        self.n = -(-len(params) // BATCH)

    def __len__(self) -> int:
        return self.n

    def jobs(self, i: int) -> int:
        return min(BATCH, len(self.params) - i * BATCH)

    def args(self, i: int) -> list[Any]:
        chunk = self.params[i * BATCH : (i + 1) * BATCH]
        items: list[str] = list(chunk)
        if self.job_keys is not None:
            keys_ = self.job_keys[i * BATCH : (i + 1) * BATCH]
            items = [x for p, k in zip(chunk, keys_, strict=True) for x in (p, k or "")]
        return [self.push_id, str(i), *self.rest, *items]


class Producing:
    client: redis.Redis
    policy: Any  # broker.Policy
    _registered: set[str]
    topology: Topology
    failover_seconds: float
    _script: Callable[..., tuple[list[Any], Any]]
    connection: Callable[[str], AbstractContextManager[redis.Connection]]

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
        self._register_queue(queue)
        suffix = keys.id_suffix(queue)
        if len(params) <= BATCH:
            pairs = [x for p, k in zip(params, job_keys, strict=True) for x in (p, k or "")]
            args = [nonce(), "0", suffix, self.policy.ttl, *spec.args(), *pairs]
            _, reply = self._script("push", queue, args, resend_at=1)
            if on_batch is not None:
                on_batch(len(params))
            return self._pushed(queue, reply)
        push_id = nonce()
        keyed = "1" if any(job_keys) else "0"
        batches = _Batches(push_id, suffix, spec, params, job_keys if keyed == "1" else None)
        try:
            self._stage(queue, batches, on_batch)
        except Exception:  # a bad parameter set among them, a server error: drop the push
            with contextlib.suppress(Exception):
                self._script(
                    "commit", queue, [push_id, "0", self.policy.ttl, *spec.args(), keyed, "1"]
                )
            raise
        args = [push_id, "0", self.policy.ttl, *spec.args(), keyed, "0"]
        _, reply = self._script("commit", queue, args, resend_at=1)
        if reply[0] == "GONE":
            raise UsageError(STAGE_EXPIRED)
        return self._pushed(queue, reply)

    def _stage(self, queue: str, batches: _Batches, on_batch: Any) -> None:
        """Stage the batches of one push, in order. The first goes alone (it loads the
        function library if need be); the rest are pipelined on one connection, the next
        built and sent while the server runs the one before, which overlaps the client's
        work with the server's. ``stage.lua`` stages a batch only after the one before it,
        so an error on the way (a lost connection, a failover) never reorders them: from
        the first batch not confirmed, the rest go one at a time, re-sent (idempotent)."""
        done = 0
        while done < len(batches):
            if done > 0:
                confirmed = self._stage_pipelined(queue, batches, done, on_batch)
                if confirmed:
                    done += confirmed
                    continue
            args = batches.args(done)
            _, reply = self._script("stage", queue, args, resend_at=2, resent=done > 0)
            if int(reply) < 0:
                raise UsageError(STAGE_EXPIRED)
            if on_batch is not None:
                on_batch(batches.jobs(done))
            done += 1

    def _stage_pipelined(self, queue: str, batches: _Batches, start: int, on_batch: Any) -> int:
        """Stage the batches from ``start`` pipelined (``scripts.pipelined``); the number
        confirmed in a row (the caller goes on alone from there)."""
        confirmed = 0

        def accepted(i: int, reply: Any) -> bool:
            nonlocal confirmed
            if int(reply) < 0:
                return False
            confirmed += 1
            if on_batch is not None:
                on_batch(batches.jobs(start + i))
            return True

        calls = (batches.args(i) for i in range(start, len(batches)))
        try:
            with self.connection(queue) as conn:
                try:
                    scripts.pipelined(conn, "stage", keys.prefix(queue), calls, accepted)
                except BaseException:  # replies may be unread: the connection is out of step
                    conn.disconnect()  # type: ignore[no-untyped-call]
                    raise
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.info("push to %s: pipelined staging cut (%s); going on one at a time", queue, e)
        return confirmed

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
            ids = [f"{r:014x}{suffix}" for r in range(rank, rank + count)]
            out += map(Pushed, ids, repeat(new), repeat(status))
        return out

    def list_tail(self, queue: str, source: str, n: int) -> list[bytes]:
        """The last ``n`` items of a raw list (its oldest, for LPUSH producers), oldest
        first, as bytes: they need not be text. Read on the queue's node (on a cluster the
        list must share the queue's hash tag)."""
        with self.connection(queue) as conn:
            conn.send_command("LRANGE", source, -n, -1)  # type: ignore[no-untyped-call]
            items = conn.read_response(disable_decoding=True)
        return [bytes(i) for i in reversed(items or [])]

    def bridge(
        self,
        queue: str,
        source: str,
        spec: PushSpec,
        items: Sequence[bytes],
        verdicts: Sequence[tuple[bool, str]],
    ) -> tuple[int, int] | None:
        """Move ``items`` (``list_tail``'s, oldest first) from the raw list into the queue
        in one script call: each as a job with the params of its verdict ``(True,
        params_json)``, or into ``SOURCE:rejected`` as ``(False, entry_json)``. Returns
        (moved, rejected), or None if the list's tail is no longer these items (nothing
        changed). Raises ``QueueFull`` (nothing changed). Safe to re-send after a lost
        reply: the first send left another tail, so a re-send moves only what is there."""
        lrange_order = list(reversed(items))
        digest = hashlib.sha1(b"".join(b"%d:%s" % (len(i), i) for i in lrange_order))
        pairs: list[str] = []
        for ok, payload in verdicts:
            pairs += ["ok" if ok else "bad", payload]
        self._register_queue(queue)
        args = [source, f"{source}:rejected", digest.hexdigest(), len(items)]
        args += [keys.id_suffix(queue), self.policy.ttl, *spec.args(), *pairs]
        _, reply = self._script("bridge", queue, args)
        if reply[0] == "CHANGED":
            return None
        if reply[0] == "FULL":
            raise QueueFull(queue, int(reply[1]), int(reply[2]), int(reply[3]))
        return int(reply[1]), int(reply[2])

    def set_max_length(self, queue: str, max_length: int | None) -> None:
        if max_length is None:
            self.client.hdel(keys.queue_key(queue, Key.META), "max_length")
        else:
            self.client.hset(keys.queue_key(queue, Key.META), "max_length", str(max_length))
