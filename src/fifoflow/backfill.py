"""Backfills: one job per interval of a past (or future) range, oldest first, each pushed
at most once. Each interval's job has the once-key ``backfill:TARGET:PARAM=VALUE``, which
``once.lua`` remembers (``once_ttl_seconds``), so re-running a backfill pushes nothing
again, and a backfill that stopped half-way (a crash, a full queue) pushes just the rest.

Intervals: ``start``, ``start + every``, ... up to ``end`` included. With plain dates
(``2026-10-01``) and whole days, each value is a date; otherwise a timestamp (ISO 8601 in
``timezone``; naive times and dates are read in it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .records import PushSpec
from .schedules import param_name, parse_duration, zone
from .validation import encode_params, integer, seconds, validate_name, validate_target

if TYPE_CHECKING:
    from .queue import Queue

#: Intervals one backfill may have at most.
MAX_INTERVALS = 100_000


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _moment(text: str, what: str, timezone: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise UsageError(
            f"invalid {what} {text!r}: use a date (2026-10-01) or an ISO 8601 time "
            "(2026-10-01T06:00)"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=zone(timezone))


def intervals(start: str, end: str, every: str | int, timezone: str = "UTC") -> list[str]:
    """The values of each interval, oldest first."""
    step = parse_duration(every, "interval")
    if not isinstance(start, str) or not isinstance(end, str):
        raise UsageError("start and end must be dates or ISO 8601 times")
    tz = zone(timezone)
    first, last = _day(start), _day(end)
    if first is not None and last is not None and step % 86400 == 0:
        if last < first:
            raise UsageError(f"end {end} is before start {start}")
        days = (last - first).days // (step // 86400) + 1
        _check_size(days)
        return [(first + timedelta(seconds=i * step)).isoformat() for i in range(days)]
    # Real time (timestamps): wall clocks of one zone repeat an hour in autumn.
    t0 = _moment(start, "start", timezone).timestamp()
    t1 = _moment(end, "end", timezone).timestamp()
    if t1 < t0:
        raise UsageError(f"end {end} is before start {start}")
    count = int((t1 - t0) // step) + 1
    _check_size(count)
    return [datetime.fromtimestamp(t0 + i * step, tz).isoformat() for i in range(count)]


def _check_size(n: int) -> None:
    if n > MAX_INTERVALS:
        raise UsageError(f"{n} intervals: a backfill may have {MAX_INTERVALS} at most")


def once_key(target: str, param: str, value: str) -> str:
    return f"backfill:{target}:{param}={value}"


@dataclass(frozen=True)
class Interval:
    value: str
    new: bool  # pushed by this run (dry run: would be)
    id: str | None = None  # the job (None: dry run, or pushed before and since expired)


@dataclass(frozen=True)
class Backfill:
    """What a backfill pushed (or, with ``dry_run``, would push), interval by interval."""

    queue: str
    target: str
    param: str
    dry_run: bool
    intervals: list[Interval] = field(default_factory=list)

    @property
    def pushed(self) -> int:
        return sum(1 for i in self.intervals if i.new)

    @property
    def skipped(self) -> int:
        return len(self.intervals) - self.pushed

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "target": self.target,
            "param": self.param,
            "dry_run": self.dry_run,
            "intervals": len(self.intervals),
            "pushed": self.pushed,
            "skipped": self.skipped,
            "jobs": [{"value": i.value, "new": i.new, "id": i.id} for i in self.intervals],
        }


def backfill(
    queue: Queue,
    target: str,
    start: str,
    end: str,
    every: str | int,
    param: str,
    params: Mapping[str, Any] | None = None,
    *,
    dry_run: bool = False,
    timezone: str = "UTC",
    pool: str = "default",
    priority: int = 0,
    retries: int = 3,
    timeout: float | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> Backfill:
    """Push ``target`` once per interval from ``start`` to ``end`` (included), each with
    ``params`` plus ``param`` = the interval's value, oldest first; intervals pushed before
    are skipped. ``dry_run``: push nothing, say what would be pushed."""
    spec = PushSpec(
        target=validate_target(target),
        priority=integer("priority", priority),
        pool=validate_name("pool", pool),
        retries=integer("retries", retries, minimum=0),
        timeout=seconds("timeout", timeout, allow_zero=False),
    )
    name = param_name(param)
    if name is None:
        raise UsageError("a backfill needs the parameter that gets each interval (--param)")
    base = dict(params or {})
    if name in base:
        raise UsageError(f"params already has {name!r}, the interval's parameter")
    values = intervals(start, end, every, timezone)
    max_bytes = queue.settings.max_params_bytes
    jobs = [
        (encode_params({**base, name: v}, max_bytes), once_key(target, name, v)) for v in values
    ]
    result = Backfill(queue.name, target, name, dry_run)
    if dry_run:
        used = queue.broker.once_used(queue.name, [k for _, k in jobs])
        result.intervals.extend(
            Interval(v, not used[k]) for v, (_, k) in zip(values, jobs, strict=True)
        )
        return result
    pushed = queue.broker.push_once(queue.name, spec, jobs, on_batch)
    result.intervals.extend(
        Interval(v, p.new, p.id or None) for v, p in zip(values, pushed, strict=True)
    )
    return result
