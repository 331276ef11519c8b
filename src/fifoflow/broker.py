"""The broker: the only code that talks to the server.

Every state change is one Lua script, and every script call goes through
``Broker._script``, the one caller of ``scripts.run``: on a pooled connection, or on one
the caller owns (a worker slot's, the dispatcher's blocking one). Replies come back as
typed records (``records.py``); neither ``Queue`` nor the worker builds a command.

Pushes, claims and reports carry a nonce (claims: the fencing token), so a call whose
reply was lost (a connection error or a socket timeout) is simply sent again: the server
recognises it and answers as the first time, without doing it twice. Reads (counts,
records) live in ``BrokerReads``, pushes in ``Producing``, schedules and pushes that
happen once in ``Scheduling``, the worker registry in ``WorkerRegistry``, capacity
records and their use in ``ResourceSide``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import keys, scripts
from .broker_push import Producing
from .broker_reads import BrokerReads
from .broker_resources import ResourceSide
from .broker_schedules import Scheduling
from .connection import connect, resolve_url
from .errors import NotReplicated, ServerOutOfMemory, is_oom, out_of_memory
from .records import (
    Claim,
    Claimed,
    ClaimRequest,
    Completion,
    Outcome,
    nonce,
    parse_claimed,
)
from .registry import WorkerRegistry
from .settings import Settings, get_settings
from .topology import TRANSIENT, Lane, Topology, replica_wait, replicated_ok, resend_pauses

log = logging.getLogger(__name__)

#: A connection error or timeout: the call may or may not have run.
LOST = (redis.ConnectionError, redis.TimeoutError)
#: The scripts that acknowledge a push or a completion: with durability ``replicated``
#: they wait for one replica.
REPLICATED = frozenset({"push", "commit", "complete", "once"})


@dataclass(frozen=True, slots=True)
class Policy:
    """What the scripts need to know of the settings when they reap or finish a job."""

    ttl: int
    max_lost: int
    retry_base: float
    retry_max: float

    @classmethod
    def from_settings(cls, settings: Settings, max_lost: int | None = None) -> Policy:
        return cls(
            ttl=settings.result_ttl_seconds,
            max_lost=settings.max_lost if max_lost is None else max_lost,
            retry_base=settings.retry_base_seconds,
            retry_max=settings.retry_max_seconds,
        )


@contextlib.contextmanager
def _held(conn: redis.Connection) -> Iterator[redis.Connection]:
    yield conn


class Broker(Producing, BrokerReads, Scheduling, WorkerRegistry, ResourceSide):
    """State changes and reads of every queue on one server. Thread-safe."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings | None = None,
        *,
        max_lost: int | None = None,
    ) -> None:
        self.client = client
        self.settings = settings or get_settings()
        self.policy = Policy.from_settings(self.settings, max_lost)
        #: The server's URL, when the broker made its own client (may hold a password).
        self.url: str | None = None
        self._registered: set[str] = set()
        self.topology = Topology(client)
        #: How long a call keeps re-sending while a primary fails over (0: a few quick
        #: re-sends only; a worker's calls retry for ever under its own policy instead).
        self.failover_seconds = self.settings.failover_seconds if self.topology.replicated else 0.0
        self._after = replica_wait(self.settings)

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        name: str | None = None,
        max_lost: int | None = None,
    ) -> Broker:
        """``name``: a worker's name; every connection is then named after it, which is
        how a live worker sees that this one died (``deathwatch``)."""
        settings = settings or get_settings()
        extra: dict[str, Any] = {}
        if name:
            extra["client_name"] = keys.CONNECTION_NAME_PREFIX + name
        url = resolve_url(url, settings)
        broker = cls(connect(url, settings=settings, **extra), settings, max_lost=max_lost)
        broker.url = url
        if name:  # a worker's calls: retried under the worker's policy, for ever
            broker.failover_seconds = 0.0
        return broker

    def close(self) -> None:
        self.client.close()

    # -- the one script path -------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, queue: str) -> Iterator[redis.Connection]:
        """A connection to the queue's node, for the caller alone (broken: disconnected)."""
        pool = self.topology.pool(queue)
        conn = pool.get_connection()
        try:
            yield conn
        except LOST:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def lane(self, per_slot: bool = False) -> Lane:
        """Connections of the caller's own, one per node (``per_slot``: per queue on a
        cluster) for a worker slot, the dispatcher; pass it as ``conn`` to the calls
        that take one."""
        return Lane(self.topology, per_slot)

    def _script(
        self,
        name: str,
        queue: str,
        args: Sequence[Any],
        *,
        conn: Lane | None = None,
        before: Sequence[Sequence[Any]] = (),
        resend_at: int | None = None,
        resent: bool = False,
        meanwhile: Callable[[], object] | None = None,
    ) -> tuple[list[Any], Any]:
        """Run a script, re-sending it if its reply may have been lost (every script is
        idempotent, see the module docstring; ``before`` commands are never re-sent).
        ``args[resend_at]`` is set to '1' on a re-send (here, or by a caller that already
        sent it: ``resent``): the script then looks for what the first send did, so the
        common path pays nothing for it. On a cluster or under Sentinel, an error that says
        the queue's primary moved or is failing over refreshes the routing first.
        With durability ``replicated``, pushes and completions wait for one replica
        (``WAIT``, in the same packet) before they count as done."""
        key = keys.prefix(queue)
        after = self._after if name in REPLICATED else ()
        pauses = resend_pauses(self.failover_seconds)
        while True:
            if resent and resend_at is not None:
                args = [*args[:resend_at], "1", *args[resend_at + 1 :]]
            c: redis.Connection | None = None
            try:
                with self.connection(queue) if conn is None else _held(conn.get(queue)) as c:
                    replies, reply = scripts.run(
                        c, name, key, args, before=before, after=after, meanwhile=meanwhile
                    )
                if after and not replicated_ok(replies[-1]):
                    raise NotReplicated(
                        f"{name}: no replica confirmed it within {self._after[0][2]} ms "
                        "(applied on the primary, not acknowledged; durability is replicated: "
                        "give the primary a replica, or set FIFOFLOW_DURABILITY=local)"
                    )
            except (*LOST, *TRANSIENT, NotReplicated) as e:
                if conn is not None and c is not None and isinstance(e, LOST):
                    conn.broken(c)
                self.topology.failed(queue, e)
                resend = isinstance(e, (*LOST, NotReplicated))
                pause = next(pauses, None) if resend or self.failover_seconds > 0 else None
                if pause is None or before:
                    raise
                time.sleep(pause)
                resent = resent or resend
                continue
            except redis.ResponseError as e:
                if is_oom(e):
                    raise ServerOutOfMemory(out_of_memory(name)) from None
                raise
            return (replies[: -len(after)] if after else replies), reply

    #: Where the resend flag sits in a claim request.
    CLAIM_RESEND = 7

    def _claim_args(self, req: ClaimRequest) -> list[Any]:
        """The claim request as ``claim_request`` in ``_common.lua`` reads it."""
        p = self.policy
        return [
            req.worker,
            repr(req.lease),
            req.n,
            req.nonce,
            p.max_lost,
            p.ttl,
            "1" if req.refill else "0",
            "0",  # resend: set by _script on a re-send
            "1" if req.resources else "0",
            *req.pools,
        ]

    # -- working ------------------------------------------------------------------------------

    def claim(
        self,
        queue: str,
        req: ClaimRequest,
        *,
        conn: Lane | None = None,
        resent: bool = False,
    ) -> Claim:
        """Claim up to ``req.n`` jobs. ``resent``: this request may have run already (an
        earlier send failed): it returns what that one took, if anything."""
        args = self._claim_args(req)
        _, reply = self._script(
            "claim", queue, args, conn=conn, resend_at=self.CLAIM_RESEND, resent=resent
        )
        return Claim(float(reply[0]), parse_claimed(queue, req.nonce, reply[1:]))

    def wait_and_claim(
        self,
        conn: Lane,
        wake_keys: Sequence[str],
        timeout: float,
        queue: str,
        req: ClaimRequest,
        meanwhile: Callable[[], object] | None = None,
    ) -> tuple[str | None, Claim]:
        """Block on the wake lists (BLPOP, all on the queue's node) with a claim pipelined
        behind it: the server runs the claim the moment the wait ends, so a push reaches an
        idle slot in one hop. Returns the wake list a token came from (None: timed out or
        unblocked). ``meanwhile``: called while the wait is under way."""
        wait = ("BLPOP", *wake_keys, timeout)
        (woke,), reply = self._script(
            "claim", queue, self._claim_args(req), conn=conn, before=[wait], meanwhile=meanwhile
        )
        popped = woke[0] if isinstance(woke, list | tuple) and woke else None
        return popped, Claim(float(reply[0]), parse_claimed(queue, req.nonce, reply[1:]))

    def hand_back(self, wake_key: str) -> None:
        """Return a wake token taken for a queue this worker then did not claim from."""
        self.client.lpush(wake_key, "1")

    def complete(
        self,
        job: Claimed,
        outcome: Outcome,
        next_claim: ClaimRequest | None = None,
        *,
        slot: int | None = None,
        conn: Lane | None = None,
        resent: bool = False,
    ) -> Completion:
        """Record one attempt's outcome and, with ``next_claim``, claim the slot's next
        job in the same call. A report without the job's current token is refused
        (``stale``): a worker whose lease was taken over cannot overwrite the record.
        ``slot``: which of the worker's slots ran it (for the timeline)."""
        p = self.policy
        req = next_claim or ClaimRequest("", 0, (), 0.0, nonce())
        jitter = "1" if outcome.kind == "ok" else repr(random.uniform(0.5, 1.0))
        args = [
            job.id,
            job.token,
            outcome.kind,
            outcome.payload,
            outcome.traceback,
            json.dumps(dict(outcome.extra)) if outcome.extra else "",
            repr(p.retry_base),
            repr(p.retry_max),
            jitter,
            "" if slot is None else str(slot),
            *self._claim_args(req),
        ]
        resend_at = len(args) - len(req.pools) - 2
        _, reply = self._script(
            "complete", job.queue, args, conn=conn, resend_at=resend_at, resent=resent
        )
        return Completion(reply[0], float(reply[1]), parse_claimed(job.queue, req.nonce, reply[2:]))

    def extend(
        self, queue: str, jobs: Sequence[Claimed], lease: float
    ) -> tuple[list[str], list[str]]:
        """Renew leases; returns the ids whose lease was lost to another worker, and those
        asked to cancel."""
        if not jobs:
            return [], []
        args: list[Any] = [repr(lease)]
        for j in jobs:
            args += [j.id, j.token]
        lost, cancelled = self._script("extend", queue, args)[1]
        return list(lost), list(cancelled)

    def release(self, queue: str, jobs: Sequence[Claimed], delay: float = 0.0) -> int:
        """Put claimed jobs back at their original places (after ``delay`` seconds)."""
        if not jobs:
            return 0
        args: list[Any] = [repr(delay)]
        for j in jobs:
            args += [j.id, j.token]
        return int(self._script("release", queue, args)[1])

    def maintain(self, queue: str) -> tuple[int, int, int]:
        """Promote due, reap expired, trim old records: (promoted, reaped, trimmed)."""
        _, (p, r, t) = self._script("maintain", queue, [self.policy.ttl, self.policy.max_lost])
        return int(p), int(r), int(t)

    def reap_worker(self, queue: str, worker: str) -> list[str]:
        """A dead worker's running jobs back in line now (each counts as a lost lease)."""
        _, ids = self._script("reap_worker", queue, [worker, self.policy.ttl, self.policy.max_lost])
        return list(ids)

    # -- changing --------------------------------------------------------------------------

    def cancel(self, queue: str, job_id: str) -> str:
        """The job's status after the call ('' if there is no such job; 'cancelling' for a
        running one: its worker stops it)."""
        return str(self._script("cancel", queue, [job_id, self.policy.ttl])[1])

    def requeue(self, queue: str, job_ids: Sequence[str] | None) -> list[str]:
        """Dead jobs (all if None) back to their places in line with fresh retries."""
        # "*" is the script's "every dead job": as an id it is just an unknown one.
        args = [i for i in job_ids if i != "*"] if job_ids is not None else ["*"]
        if not args:
            return []
        return list(self._script("requeue", queue, args)[1])

    def purge_dead(self, queue: str) -> int:
        return int(self._script("purge", queue, [])[1])
