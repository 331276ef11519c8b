"""The broker's reads: job records, counts, listings, live workers, server facts. Plain
commands (no script): each is idempotent, and each is bounded by what it is asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import redis

from . import keys
from .errors import UsageError
from .keys import RUN_BUCKETS, WAIT_BUCKETS, Field, Key, Status
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

    def queued_by_pool(self, queue: str, pools: Sequence[str]) -> dict[str, int]:
        """Jobs waiting in line in each of these pools (one ZCARD each)."""
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(queue, p))
        return dict(zip(pools, (int(n) for n in pipe.execute()), strict=True))

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

    # -- operations: counters, histograms, the timeline, pages ----------------------------

    @staticmethod
    def _sets_of(status: str | None) -> list[Key]:
        if status is None:
            return [Key.ALL]
        if status == Status.DELAYED:
            return [Key.DELAYED, Key.RETRY]
        return [Key(status)]

    def metrics(self, queue: str) -> dict[str, Any]:
        """The queue's monotonic counters and histograms, as the scripts keep them:
        ``{"counters": {event: {pool: n}}, "wait" / "run": {pool: ([n per bucket], sum s)}}``.
        Buckets follow ``keys.WAIT_BUCKETS`` / ``keys.RUN_BUCKETS``, the last one +Inf."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.queue_key(queue, Key.STATS))
        pipe.hgetall(keys.queue_key(queue, Key.HIST))
        stats, hist = pipe.execute()
        counters: dict[str, dict[str, int]] = {}
        for field, value in stats.items():
            event, _, pool = field.partition(":")
            counters.setdefault(event, {})[pool] = int(value)
        out: dict[str, Any] = {"counters": counters, "wait": {}, "run": {}}
        sizes = {"wait": len(WAIT_BUCKETS) + 1, "run": len(RUN_BUCKETS) + 1}
        for field, value in hist.items():
            name, _, rest = field.partition(":")
            if name.endswith("_us"):
                entry = out[name[:-3]].setdefault(rest, [[0] * sizes[name[:-3]], 0.0])
                entry[1] = int(value) / 1e6
            elif name in sizes:
                pool, _, index = rest.rpartition(":")
                entry = out[name].setdefault(pool, [[0] * sizes[name], 0.0])
                entry[0][int(index) - 1] = int(value)
        return out

    def oldest_queued(self, queue: str, pools: Sequence[str], bands: int = 32) -> float | None:
        """Push time (Unix seconds) of the oldest job waiting in these pools' ready sets,
        or None. Each priority is a band of equal scores, ordered by id (push order), so
        the first member of each band is its oldest: one command per band, at most
        ``bands`` per pool."""
        oldest: float | None = None
        for pool in pools:
            ready = keys.ready(queue, pool)
            low = "-inf"
            for _ in range(bands):
                head = cast(
                    list[tuple[str, float]],
                    self.client.zrangebyscore(ready, low, "+inf", start=0, num=1, withscores=True),
                )
                if not head:
                    break
                job_id, score = head[0]
                pushed = int(str(job_id)[:14], 16) / 1e6
                oldest = pushed if oldest is None else min(oldest, pushed)
                low = f"({score}"
        return oldest

    def timeline(self, queue: str, count: int = 1000) -> list[dict[str, Any]]:
        """The last ``count`` finished attempts (the capped events stream), newest first."""
        entries = cast(
            list[tuple[str, dict[str, str]]],
            self.client.xrevrange(keys.queue_key(queue, Key.EVENTS), count=count),
        )
        out = []
        for entry_id, fields in entries:
            row: dict[str, Any] = dict(fields)
            row["event_id"] = entry_id
            for t in ("started", "finished"):
                row[t] = float(row[t]) if row.get(t) else None
            out.append(row)
        return out

    def page(
        self,
        queue: str,
        status: str | None = None,
        *,
        pool: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of jobs and the cursor of the next (None: no more). Bounded by the page:
        one listing command (one per pool for queued jobs) and one read per job. Without a
        status: every job by push order (newest first unless told otherwise); ``queued``:
        in run order (priority, then push order); other statuses: by their set's time
        (finish, due or lease time), newest first unless told otherwise."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        start = int(cursor or 0)
        stop = start + limit - 1
        if status == Status.QUEUED:  # run order: priority, then push order
            sets = [keys.ready(queue, p) for p in ([pool] if pool else self.pools(queue))]
            descending = False
        else:
            sets = [keys.queue_key(queue, k) for k in self._sets_of(status)]
            descending = newest_first
        pipe = self.client.pipeline(transaction=False)
        for zkey in sets:
            if descending:
                pipe.zrevrange(zkey, 0, stop, withscores=True)
            else:
                pipe.zrange(zkey, 0, stop, withscores=True)
        merged = sorted(
            ((score, job_id) for part in pipe.execute() for job_id, score in part),
            reverse=descending,
        )
        ids = [job_id for _, job_id in merged][start : stop + 1]
        records = self.records(queue, ids)
        if pool is not None and status != Status.QUEUED:
            records = [r for r in records if r["pool"] == pool]
        more = len(ids) == limit
        return records, (str(stop + 1) if more else None)
