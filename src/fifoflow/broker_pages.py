"""The broker's listings, a bounded page at a time: jobs by push order, by their status's
own time, or queued jobs in run order; a cursor says where the next page starts. Plain
reads (no script), each bounded by the page whatever the queue's size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from . import keys
from .errors import UsageError
from .keys import Key, Status

STATUSES = tuple(s.value for s in Status)


class Pages:
    client: redis.Redis

    def records(self, queue: str, job_ids: Sequence[str]) -> list[dict[str, Any]]:  # BrokerReads'
        raise NotImplementedError  # pragma: no cover

    def pools(self, queue: str) -> list[str]:  # pragma: no cover - BrokerReads'
        raise NotImplementedError

    def _all_window(
        self, queue: str, after: int | None, n: int, descending: bool
    ) -> list[tuple[str, float]]:
        """The first ``n`` (id, rank) of the ``all`` index past the rank ``after`` (None:
        from the start), newest first if ``descending``. The index keeps runs of
        consecutive ids (see ``index_runs`` in _common.lua): at most ``n`` + 1 entries are
        read, since each holds one id or more past the cursor. Ids whose records are gone
        (the runs keep their span) come back too; ``records`` leaves them out."""
        key = keys.queue_key(queue, Key.ALL)
        pipe = self.client.pipeline(transaction=False)
        if descending:
            top = "+inf" if after is None else f"({after}"
            pipe.zrevrangebyscore(key, top, "-inf", start=0, num=n + 1)
        else:  # the run holding `after` + 1 starts at or before it
            if after is not None:
                pipe.zrevrangebyscore(key, after, "-inf", start=0, num=1)
            pipe.zrangebyscore(key, "-inf" if after is None else f"({after}", "+inf", 0, n + 1)
        members = [m for part in pipe.execute() for m in part]
        out: list[tuple[str, float]] = []
        for member in members:
            pairs = _expand(member)
            for rank, job_id in reversed(pairs) if descending else pairs:
                if after is None or (rank < after if descending else rank > after):
                    out.append((job_id, float(rank)))
            if len(out) >= n:
                break
        return out[:n]

    @staticmethod
    def _sets_of(status: str | None) -> list[Key]:
        if status is None:
            return [Key.ALL]
        if status == Status.DELAYED:
            return [Key.DELAYED, Key.RETRY]
        return [Key(status)]

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
        run_order: bool = True,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of jobs and the cursor of the next (None: no more). Without a status:
        every job by push order (newest first unless told otherwise); ``queued``: in run
        order (priority, then push order), or with ``run_order=False`` by push order like
        the others; other statuses: by their set's time (finish, due or lease time), newest
        first unless told otherwise.

        Bounded by the page, whatever the queue's size: a round reads a window of ``limit``
        + 1 entries from each listed set (one command each, from the cursor's offset in that
        set; the one more says whether a next page exists) and the records of the first
        ``limit`` of them in merged order (one command each). A filter the sets cannot
        apply (``pool`` beside a status other than queued, a ``target`` substring, queued
        jobs by push order) drops what does not match; up to ``rounds`` windows are read to
        fill the page, and the cursor says where the scan stopped."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if limit < 1 or rounds < 1:
            raise UsageError("limit and rounds must be at least 1")
        by_status = status == Status.QUEUED and not run_order  # push order: filter `all`
        if status == Status.QUEUED and run_order:  # priority, then push order
            names = [pool] if pool else self.pools(queue)
            sets = {n: keys.ready(queue, n) for n in names}
            descending = False
        else:
            sets = {
                str(k): keys.queue_key(queue, k)
                for k in self._sets_of(None if by_status else status)
            }
            descending = newest_first
        offsets = _parse_cursor(cursor, list(sets))

        def wanted(r: dict[str, Any]) -> bool:
            if by_status and r["status"] != Status.QUEUED:
                return False
            by_set = status == Status.QUEUED and run_order  # the sets are the pool's
            if pool is not None and not by_set and r["pool"] != pool:
                return False
            return not target or target in str(r["target"])

        out: list[dict[str, Any]] = []
        more = False
        parts: dict[str, list[tuple[str, float]]]
        for _ in range(rounds):
            if Key.ALL in sets:  # the one set; its cursor is a rank, not an offset
                after = offsets[Key.ALL] or None
                parts = {Key.ALL: self._all_window(queue, after, limit + 1, descending)}
            else:
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
            for score, job_id, name in merged[:limit]:
                used += 1
                offsets[name] = int(score) if name == Key.ALL else offsets[name] + 1
                record = records.get(job_id)
                if record is not None and wanted(record):
                    out.append(record)
                    if len(out) == limit:
                        break
            more = used < len(merged)
            if len(out) == limit or not more:
                break
        return out, (_format_cursor(offsets) if more else None)


def _expand(member: str) -> list[tuple[int, str]]:
    """An ``all`` entry as (rank, id) pairs: a run "FIRST COUNT LEFT" or a bare id."""
    first, _, rest = member.partition(" ")
    count = int(rest.split(" ", 1)[0]) if rest else 1
    rank, suffix = int(first[:14], 16), first[14:]
    return [(r, f"{r:014x}{suffix}") for r in range(rank, rank + count)]


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
