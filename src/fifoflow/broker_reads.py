"""The broker's reads: job records, counts, listings, live workers, server facts. Plain
commands (no script): each is idempotent, and each is bounded by what it is asked for."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
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

    @contextlib.contextmanager
    def finished_ids(self, queue: str) -> Iterator[Callable[[float], set[str]]]:
        """While open, a function that waits up to ``timeout`` seconds for jobs of the queue
        to reach a final status and returns their ids (the scripts publish each one): a
        waiter wakes when its job ends, not on a poll interval."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(keys.queue_key(queue, Key.DONE))

        def wait(timeout: float) -> set[str]:
            ids: set[str] = set()
            deadline = time.monotonic() + timeout
            while True:
                message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
                if message is not None and message.get("type") == "message":
                    ids.add(str(message["data"]))
                    continue  # take what else is already there
                if ids or time.monotonic() >= deadline:
                    return ids

        try:
            yield wait
        finally:
            pubsub.close()

    def resolve(self, queue: str, alias: str) -> str:
        """The id of the job its pusher called ``alias`` (else ``alias`` itself)."""
        found = self.client.hget(keys.queue_key(queue, Key.ALIASES), alias)
        return str(found) if found else alias

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
        others = (Key.WAITING, Key.DELAYED, Key.RETRY, Key.RUNNING)
        for k in (*others, Key.SUCCEEDED, Key.DEAD, Key.CANCELLED):
            pipe.zcard(keys.queue_key(queue, k))
        counts = pipe.execute()
        queued = sum(counts[: len(pools)])
        waiting, delayed, retry, running, succeeded, dead, cancelled = counts[len(pools) :]
        return {
            "queued": queued,
            "waiting": waiting,
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

    def job_ids(self, queue: str, status: str | None = None) -> list[str]:
        """Ids with a status (all if None), oldest first (ids sort by creation)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        sets: list[str] = []
        if status in (None, Status.QUEUED):
            sets += [keys.ready(queue, p) for p in self.pools(queue)]
        if status in (None, Status.DELAYED):
            sets += [keys.queue_key(queue, Key.DELAYED), keys.queue_key(queue, Key.RETRY)]
        for s in (Key.WAITING, Key.RUNNING, Key.SUCCEEDED, Key.DEAD, Key.CANCELLED):
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

    def timeline(
        self, queue: str, count: int = 1000, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The last ``count`` finished attempts (the capped events stream), newest first;
        with ``since`` (Unix seconds) only those that finished from then on."""
        low = "-" if since is None else str(max(0, int(since * 1000)))
        entries = cast(
            list[tuple[str, dict[str, str]]],
            self.client.xrevrange(keys.queue_key(queue, Key.EVENTS), "+", low, count=count),
        )
        return [_event(entry_id, fields) for entry_id, fields in entries]

    def attempts(
        self,
        queue: str,
        job_id: str,
        since: float,
        until: float | None = None,
        want: int = 1,
        scan: int = keys.EVENTS_CAP,
        chunk: int = 500,
    ) -> list[dict[str, Any]]:
        """The job's finished attempts in the events stream, oldest first: the stream is read
        backwards from ``until`` (its last finish; None: now) to ``since`` (its push), in
        chunks, until ``want`` attempts are found or ``scan`` entries were read (one command
        per chunk: at most ``scan / chunk`` however long the queue). Older attempts than the
        stream keeps are gone."""
        stream = keys.queue_key(queue, Key.EVENTS)
        high = "+" if until is None else str(int(until * 1000) + 1)
        low = str(max(0, int(since * 1000)))
        found: list[dict[str, Any]] = []
        scanned = 0
        while scanned < scan:
            entries = cast(
                list[tuple[str, dict[str, str]]],
                self.client.xrevrange(stream, high, low, count=min(chunk, scan - scanned)),
            )
            found += [_event(i, f) for i, f in entries if f.get("id") == job_id]
            scanned += len(entries)
            if len(found) >= want or len(entries) < chunk:
                break
            high = f"({entries[-1][0]}"
        return found[::-1]

    def ready_counts(self, queue: str, pools: Sequence[str]) -> dict[str, int]:
        """Jobs ready per pool: one ZCARD each."""
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(queue, p))
        return dict(zip(pools, (int(n) for n in pipe.execute()), strict=True))

    def page(
        self,
        queue: str,
        status: str | None = None,
        *,
        pool: str | None = None,
        target: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
        rounds: int = 1,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of jobs and the cursor of the next (None: no more). Without a status:
        every job by push order (newest first unless told otherwise); ``queued``: in run
        order (priority, then push order); other statuses: by their set's time (finish, due
        or lease time), newest first unless told otherwise.

        Bounded by the page, whatever the queue's size: a round reads a window of ``limit``
        + 1 entries from each listed set (one command each, from the cursor's offset in that
        set; the one more says whether a next page exists) and the records of the first
        ``limit`` of them in merged order (one command each). A filter the sets cannot
        apply (``pool`` beside a status other than queued, a ``target`` substring) drops
        what does not match; up to ``rounds`` windows are read to fill the page, and the
        cursor says where the scan stopped."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if limit < 1 or rounds < 1:
            raise UsageError("limit and rounds must be at least 1")
        if status == Status.QUEUED:  # run order: priority, then push order
            names = [pool] if pool else self.pools(queue)
            sets = {n: keys.ready(queue, n) for n in names}
            descending = False
        else:
            sets = {str(k): keys.queue_key(queue, k) for k in self._sets_of(status)}
            descending = newest_first
        offsets = _parse_cursor(cursor, list(sets))

        def wanted(r: dict[str, Any]) -> bool:
            if pool is not None and status != Status.QUEUED and r["pool"] != pool:
                return False
            return not target or target in str(r["target"])

        out: list[dict[str, Any]] = []
        more = False
        for _ in range(rounds):
            pipe = self.client.pipeline(transaction=False)
            for name, zkey in sets.items():
                read = pipe.zrevrange if descending else pipe.zrange
                read(zkey, offsets[name], offsets[name] + limit, withscores=True)
            parts = dict(zip(sets, pipe.execute(), strict=True))
            merged = sorted(
                ((score, job_id, name) for name, part in parts.items() for job_id, score in part),
                reverse=descending,
            )  # its first `limit` + 1 are the listing's next ones: no set has more before them
            records = {r["id"]: r for r in self.records(queue, [m[1] for m in merged[:limit]])}
            used = 0
            for _, job_id, name in merged[:limit]:
                used += 1
                offsets[name] += 1
                record = records.get(job_id)
                if record is not None and wanted(record):
                    out.append(record)
                    if len(out) == limit:
                        break
            more = used < len(merged)
            if len(out) == limit or not more:
                break
        return out, (_format_cursor(offsets) if more else None)


def _event(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(fields)
    row["event_id"] = entry_id
    for t in ("started", "finished"):
        row[t] = float(row[t]) if row.get(t) else None
    return row


def _parse_cursor(cursor: str | None, names: Sequence[str]) -> dict[str, int]:
    """``name:offset,...`` (one offset per listed set; a set not named starts at 0)."""
    offsets = dict.fromkeys(names, 0)
    for part in (cursor or "").split(","):
        if not part:
            continue
        name, _, offset = part.rpartition(":")
        if not offset.isdigit() or name not in offsets:
            raise UsageError(f"invalid cursor {cursor!r}")
        offsets[name] = int(offset)
    return offsets


def _format_cursor(offsets: dict[str, int]) -> str:
    return ",".join(f"{name}:{n}" for name, n in offsets.items() if n)
