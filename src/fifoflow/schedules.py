"""Schedules, the model: when a schedule ticks and what a scheduler does about the ticks
that are due. No server calls here (the broker keeps schedules; ``scheduler`` fires them).

A schedule ticks on a cron expression (``croniter``, in its timezone) or every fixed
period (``--every 10m``: multiples of the period since the Unix epoch, so ``1h`` ticks on
the hour UTC). Its *watermark* is the newest tick handled, fired or skipped; it starts at
the schedule's creation, so no tick before that ever fires. A scheduler that looks at time
``now`` handles the ticks after the watermark: a tick at most ``grace`` seconds old is on
time and fires; an older one was *missed* (no scheduler looked while it was fresh), and
the catch-up policy decides: ``all`` fires every missed tick (oldest first), ``last`` only
the newest of them, ``none`` none.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from .errors import UsageError
from .keys import ScheduleField
from .validation import encode_params, integer, seconds, validate_name, validate_target

Catchup = Literal["none", "last", "all"]
CATCHUPS: tuple[Catchup, ...] = ("none", "last", "all")
#: How late a tick may fire and still be on time, unless a schedule says otherwise.
DEFAULT_GRACE = 60
#: Ticks one call fires at most (a long catch-up takes several calls, oldest first).
BATCH = 500
#: Missed cron ticks counted one by one at most (the skipped count of a longer gap of a
#: cron schedule stops there).
COUNT_CAP = 10_000

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_duration(text: object, what: str = "duration") -> int:
    """Whole seconds of ``10m``, ``1h30m``, ``1d``, ``2w``, ``45s`` or a bare ``90``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.strip().isdigit():
        value = int(text.strip())
    else:
        m = _DURATION_RE.match(text.strip().lower()) if isinstance(text, str) else None
        if not m or not any(m.groups()):
            raise UsageError(
                f"invalid {what} {text!r}: use e.g. 30s, 10m, 1h30m, 1d or 2w (whole units)"
            )
        value = sum(int(n) * u for n, u in zip(m.groups(), _UNITS.values(), strict=True) if n)
    if not 0 < value <= 3650 * 86400:
        raise UsageError(f"invalid {what} {text!r}: it must be between 1s and 3650d")
    return value


def format_duration(value: int) -> str:
    parts = []
    for unit, size in _UNITS.items():
        if value >= size:
            parts.append(f"{value // size}{unit}")
            value %= size
    return "".join(parts) or "0s"


def zone(name: object) -> tzinfo:
    if not isinstance(name, str) or not name:
        raise UsageError(f"unknown timezone {name!r}")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown timezone {name!r}: use an IANA name such as Europe/Paris"
        ) from None


def parse_cron(expr: object, tz: tzinfo) -> str:
    """A cron expression croniter accepts (5 fields, or 6 with seconds last, or @hourly ...)
    that fires at least once."""
    if not isinstance(expr, str) or len(expr.split()) not in (1, 5, 6):
        raise UsageError(f"invalid cron expression {expr!r}: expected 5 fields (m h dom mon dow)")
    try:
        if not croniter.is_valid(expr):
            raise CroniterBadCronError(expr)
        croniter(expr, datetime(2000, 1, 1, tzinfo=tz)).get_next(datetime)
    except CroniterBadDateError:
        raise UsageError(f"cron expression {expr!r} never fires") from None
    except (CroniterBadCronError, ValueError, KeyError):
        raise UsageError(f"invalid cron expression {expr!r}") from None
    return expr


def param_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not _PARAM_RE.match(name):
        raise UsageError(f"invalid parameter name {name!r}: use a Python identifier")
    return name


def utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_key(name: str, tick: int) -> str:
    """The de-duplication key of a schedule's job for one tick."""
    return f"schedule:{name}:{utc_text(tick)}"


@dataclass(frozen=True)
class Spec:
    """What a schedule pushes, and when. Built by ``Spec.create`` (which checks all of it)."""

    target: str
    params: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    every: int | None = None  # seconds
    timezone: str = "UTC"
    catchup: Catchup = "last"
    grace: int = DEFAULT_GRACE
    param: str | None = None  # gets the tick's time (ISO 8601, in the timezone)
    pool: str = "default"
    priority: int = 0
    retries: int = 3
    timeout: float | None = None

    @classmethod
    def create(
        cls,
        target: str,
        params: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: str | int | None = None,
        timezone: str = "UTC",
        catchup: str = "last",
        grace: str | int = DEFAULT_GRACE,
        param: str | None = None,
        pool: str = "default",
        priority: int = 0,
        retries: int = 3,
        timeout: float | None = None,
        max_params_bytes: int = 1024 * 1024,
    ) -> Spec:
        if (cron is None) == (every is None):
            raise UsageError("give exactly one of cron (--cron EXPR) and every (--every DURATION)")
        tz = zone(timezone)
        if catchup not in CATCHUPS:
            raise UsageError(f"invalid catch-up {catchup!r}: one of {', '.join(CATCHUPS)}")
        zero = isinstance(grace, int | str) and str(grace).strip().lower() in ("0", "0s")
        grace_s = 0 if zero else parse_duration(grace, "grace")
        encoded = encode_params(dict(params or {}), max_params_bytes)
        spec = cls(
            target=validate_target(target),
            params=json.loads(encoded),
            cron=None if cron is None else parse_cron(cron, tz),
            every=None if every is None else parse_duration(every, "interval"),
            timezone=timezone,
            catchup=catchup,
            grace=grace_s,
            param=param_name(param),
            pool=validate_name("pool", pool),
            priority=integer("priority", priority),
            retries=integer("retries", retries, minimum=0),
            timeout=seconds("timeout", timeout, allow_zero=False),
        )
        if spec.param is not None and spec.param in spec.params:
            raise UsageError(f"params already has {spec.param!r}, the tick's parameter")
        return spec

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)

    @property
    def when(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {format_duration(self.every or 0)}"

    def params_for(self, tick: int) -> dict[str, Any]:
        if self.param is None:
            return self.params
        return {**self.params, self.param: datetime.fromtimestamp(tick, self.tz).isoformat()}

    # -- ticks (whole Unix seconds) --------------------------------------------------------

    def ticks(self, after: float, until: float, limit: int) -> Iterator[int]:
        """Ticks in (after, until], oldest first, at most ``limit``."""
        if self.every:
            first = (math.floor(after) // self.every + 1) * self.every
            last = math.floor(until) // self.every * self.every
            yield from range(first, min(last, first + (limit - 1) * self.every) + 1, self.every)
            return
        it = croniter(cast(str, self.cron), datetime.fromtimestamp(math.floor(after), self.tz))
        for _ in range(limit):
            t = round(float(it.get_next(float)))
            if t > until:
                return
            yield t

    def latest(self, at: float) -> int | None:
        """The newest tick at or before ``at``."""
        if self.every:
            return math.floor(at) // self.every * self.every
        it = croniter(cast(str, self.cron), datetime.fromtimestamp(math.floor(at) + 1, self.tz))
        try:
            return round(float(it.get_prev(float)))
        except CroniterBadDateError:
            return None

    def next_tick(self, after: float) -> int:
        """The first tick after ``after``."""
        if self.every:
            return (math.floor(after) // self.every + 1) * self.every
        it = croniter(cast(str, self.cron), datetime.fromtimestamp(math.floor(after), self.tz))
        return round(float(it.get_next(float)))

    def count(self, after: int, until: int) -> int:
        """Ticks in (after, until] (cron: counted up to ``COUNT_CAP``)."""
        if until <= after:
            return 0
        if self.every:
            return until // self.every - after // self.every
        return sum(1 for _ in self.ticks(after, until, COUNT_CAP))


@dataclass(frozen=True)
class Plan:
    """What one scheduler call does: fire these ticks, move the watermark to ``watermark``,
    and count ``skipped`` missed ticks passed over. ``more``: ticks were left for the next
    call (a long catch-up)."""

    fire: list[int]
    watermark: int
    skipped: int
    missed: int
    more: bool = False


def plan(spec: Spec, last: int, now: float, limit: int = BATCH) -> Plan | None:
    """What to do at server time ``now`` with watermark ``last``; None: nothing is due."""
    cutoff = now - spec.grace  # a tick before the cutoff was missed
    newest_missed = spec.latest(math.ceil(cutoff) - 1)
    if newest_missed is not None and newest_missed <= last:
        newest_missed = None
    if spec.catchup == "all":
        fire = list(spec.ticks(last, now, limit + 1))
        if not fire:
            return None
        more = len(fire) > limit
        fire = fire[:limit]
        missed = sum(1 for t in fire if t < cutoff)  # of this call's ticks
        return Plan(fire, fire[-1], 0, missed, more)
    on_time = list(spec.ticks(max(last, newest_missed or last), now, limit + 1))
    if newest_missed is None:
        if not on_time:
            return None
        return Plan(on_time[:limit], on_time[:limit][-1], 0, 0, len(on_time) > limit)
    missed = spec.count(last, newest_missed)
    if spec.catchup == "last":
        due, skipped = [newest_missed, *on_time], missed - 1
    else:
        due, skipped = on_time, missed
    fire = due[:limit]
    watermark = fire[-1] if fire else newest_missed
    return Plan(fire, watermark, skipped, missed, len(due) > limit)


@dataclass(frozen=True)
class Schedule:
    """A schedule as the server keeps it: its spec and its state."""

    queue: str
    name: str
    spec: Spec
    last: int  # the watermark
    paused: bool = False
    created_at: float | None = None
    fired: int = 0
    skipped: int = 0
    last_fired: int | None = None
    last_id: str | None = None

    @classmethod
    def from_hash(cls, queue: str, name: str, raw: Mapping[str, str]) -> Schedule:
        f = ScheduleField

        def num(key: str) -> int:
            return int(raw.get(key) or 0)

        return cls(
            queue=queue,
            name=name,
            spec=Spec.from_json(raw[f.SPEC]),
            last=num(f.LAST),
            paused=raw.get(f.PAUSED) == "1",
            created_at=float(raw[f.CREATED_AT]) if raw.get(f.CREATED_AT) else None,
            fired=num(f.FIRED),
            skipped=num(f.SKIPPED),
            last_fired=int(raw[f.LAST_FIRED]) if raw.get(f.LAST_FIRED) else None,
            last_id=raw.get(f.LAST_ID) or None,
        )

    def next_tick(self, now: float) -> int | None:
        """The next tick that may fire (None while paused)."""
        return None if self.paused else self.spec.next_tick(max(self.last, math.floor(now)))

    def to_dict(self, now: float) -> dict[str, Any]:
        nxt = self.next_tick(now)
        return {
            "queue": self.queue,
            "name": self.name,
            **asdict(self.spec),
            "paused": self.paused,
            "created_at": self.created_at,
            "watermark": utc_text(self.last),
            "fired": self.fired,
            "skipped": self.skipped,
            "last_fired": None if self.last_fired is None else utc_text(self.last_fired),
            "last_id": self.last_id,
            "next": None if nxt is None else utc_text(nxt),
        }
