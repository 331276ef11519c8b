"""Small formatting helpers of the templates (times, durations, rates), and input checks."""

from __future__ import annotations

import json
import time
from typing import Any

from jinja2 import Environment
from markupsafe import escape as _escape

from ..errors import UsageError


def escape(text: str) -> str:
    return str(_escape(text))


def bounded_int(value: str | None, default: int, low: int, high: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {value!r}") from None
    if not low <= n <= high:
        raise UsageError(f"{name} must be between {low} and {high}")
    return n


def ts(value: float | None) -> str:
    """Unix seconds as local date and time (to the millisecond)."""
    if value is None:
        return "—"
    millis = int((value % 1) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) + f".{millis:03d}"


def clock(value: float | None) -> str:
    if value is None:
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(value))


def dur(value: float | None) -> str:
    """Seconds, readably: 850 ms, 3.2 s, 4m 05s, 2h 03m."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60):02d}s"
    return f"{int(value // 3600)}h {int(value % 3600 // 60):02d}m"


def rate(value: float | None) -> str:
    """Per minute; '—' before the dashboard has two samples."""
    if value is None:
        return "—"
    return f"{value:.0f}/min" if value >= 10 else f"{value:.1f}/min"


def pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def install(env: Environment) -> None:
    env.filters.update(ts=ts, clock=clock, dur=dur, rate=rate, pct=pct, pretty=pretty)
