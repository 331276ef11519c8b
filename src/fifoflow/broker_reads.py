"""The broker's reads: job records, counts, listings, live workers, server facts. Plain
commands (no script): each is idempotent, and each is bounded by what it is asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import redis

from . import keys
from .errors import UsageError
from .keys import Field, Key, Status
from .records import job_record

if TYPE_CHECKING:
    from .broker import Policy

STATUSES = tuple(s.value for s in Status)


class BrokerReads:
    client: redis.Redis
    policy: Policy

    def maintain(self, queue: str) -> tuple[int, int, int]:  # pragma: no cover - Broker's
        raise NotImplementedError

    def queues(self) -> list[str]:
        """Every queue ever pushed to."""
        return sorted(str(q) for q in self.client.smembers(keys.QUEUES))

    def pools(self, queue: str) -> list[str]:
        return sorted(str(p) for p in self.client.smembers(keys.queue_key(queue, Key.POOLS)))

    def record(self, queue: str, job_id: str) -> dict[str, Any] | None:
        raw = cast(dict[str, str], self.client.hgetall(keys.job(queue, job_id)))
        return job_record(queue, job_id, raw) if raw else None

    def records(self, queue: str, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for i in job_ids:
            pipe.hgetall(keys.job(queue, i))
        return [
            job_record(queue, i, raw) for i, raw in zip(job_ids, pipe.execute(), strict=True) if raw
        ]

    def traceback(self, queue: str, job_id: str) -> str | None:
        tb = self.client.hget(keys.job(queue, job_id), Field.TRACEBACK)
        return str(tb) if tb else None

    def counts(self, queue: str) -> dict[str, int]:
        """Counts per status, each an O(1) ZCARD (queued: one per pool), after housekeeping
        so that due jobs count as queued and expired leases as lost."""
        self.maintain(queue)
        pools = self.pools(queue)
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(queue, p))
        for k in (Key.DELAYED, Key.RETRY, Key.RUNNING, Key.SUCCEEDED, Key.DEAD, Key.CANCELLED):
            pipe.zcard(keys.queue_key(queue, k))
        counts = pipe.execute()
        queued = sum(counts[: len(pools)])
        delayed, retry, running, succeeded, dead, cancelled = counts[len(pools) :]
        return {
            "queued": queued,
            "delayed": delayed + retry,
            "running": running,
            "succeeded": succeeded,
            "dead": dead,
            "cancelled": cancelled,
        }

    def waiting(self, queue: str, pools: Sequence[str]) -> int:
        """Jobs ready in these pools, plus those waiting for a retry, plus running ones:
        what keeps a burst worker from leaving."""
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(queue, p))
        pipe.zcard(keys.queue_key(queue, Key.RETRY))
        pipe.zcard(keys.queue_key(queue, Key.RUNNING))
        return sum(pipe.execute())

    def running_count(self, queues: Sequence[str]) -> int:
        """Jobs running in these queues, all workers together."""
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.zcard(keys.queue_key(q, Key.RUNNING))
        return sum(pipe.execute())

    def job_ids(self, queue: str, status: str | None = None) -> list[str]:
        """Ids with a status (all if None), oldest first (ids sort by creation)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        sets: list[str] = []
        if status in (None, Status.QUEUED):
            sets += [keys.ready(queue, p) for p in self.pools(queue)]
        if status in (None, Status.DELAYED):
            sets += [keys.queue_key(queue, Key.DELAYED), keys.queue_key(queue, Key.RETRY)]
        for s in (Key.RUNNING, Key.SUCCEEDED, Key.DEAD, Key.CANCELLED):
            if status in (None, s.value):
                sets.append(keys.queue_key(queue, s))
        pipe = self.client.pipeline(transaction=False)
        for z in sets:
            pipe.zrange(z, 0, -1)
        return sorted({i for ids in pipe.execute() for i in ids})
