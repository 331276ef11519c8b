"""Alerts: thresholds crossed in a ``metrics.snapshot``, as records with a one-line message.

Pure logic, no server call: ``evaluate`` turns one snapshot into the alerts it shows,
``Tracker`` turns successive evaluations into starts and resolutions, and ``prefect_event``
describes an alert as a Prefect event. ``fifoflow monitor`` (``cli/monitor.py``) delivers
them; ``deploy/prometheus/fifoflow-rules.yml`` states the same five alerts in PromQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from .metrics import is_healthy
from .settings import Settings


class Kind(StrEnum):
    """What an alert is about; Prefect events are named ``fifoflow.alert.<kind>``."""

    QUEUED = "queued"  # more jobs waiting in a queue than max_queued
    DEAD = "dead"  # more dead letters in a queue than max_dead
    AGE = "age"  # the oldest queued job has waited longer than max_age seconds
    NO_WORKER = "no_worker"  # jobs queued in a pool no live worker serves
    UNHEALTHY = "unhealthy"  # a worker lost a thread or met a server error in the last minute
    SERVER = "server"  # the monitor cannot read the server (its loop only)


@dataclass(frozen=True)
class Thresholds:
    """Limits; an alert fires above its limit (strictly). 0 turns a limit off."""

    max_queued: int = 100
    max_dead: int = 10
    max_age: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: float | None) -> Thresholds:
        """``FIFOFLOW_ALERT_*`` settings, each replaced by an override that is not None."""
        values: dict[str, Any] = {
            "max_queued": settings.alert_max_queued,
            "max_dead": settings.alert_max_dead,
            "max_age": settings.alert_max_age,
        }
        for name, value in overrides.items():
            if name not in values:
                raise TypeError(f"unknown threshold {name!r}")
            if value is not None:
                if not value >= 0:  # NaN too
                    raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
                values[name] = value
        return cls(int(values["max_queued"]), int(values["max_dead"]), float(values["max_age"]))

    def describe(self) -> str:
        """``queued > 100, dead > 10, age > 600s, no_worker, unhealthy`` (``dead off``...)."""
        parts = [
            f"{name} > {value:g}{unit}" if value else f"{name} off"
            for name, value, unit in (
                ("queued", self.max_queued, ""),
                ("dead", self.max_dead, ""),
                ("age", self.max_age, "s"),
            )
        ]
        return ", ".join([*parts, "no_worker", "unhealthy"])


@dataclass(frozen=True)
class Alert:
    """One crossed threshold. ``key`` identifies it across evaluations."""

    kind: str
    message: str
    queue: str | None = None
    pool: str | None = None
    worker: str | None = None
    host: str | None = None
    value: float = 0.0
    threshold: float | None = None

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.kind, self.queue, self.pool, self.worker)

    @property
    def subject(self) -> str:
        if self.worker is not None:
            return f"worker {self.worker}"
        if self.queue is None:
            return "server"
        return f"queue {self.queue}" + (f" pool {self.pool}" if self.pool is not None else "")

    def line(self) -> str:
        """The alert as one line: ``KIND: MESSAGE``."""
        return f"{self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "subject": self.subject}


def evaluate(
    snap: Mapping[str, Any], thresholds: Thresholds, queues: Sequence[str] | None = None
) -> list[Alert]:
    """The alerts one snapshot shows, in a stable order. ``queues`` (default: every queue
    of the snapshot) also limits the workers looked at to those serving one of them."""
    now = float(snap.get("time") or time.time())
    names = sorted(snap["queues"]) if queues is None else list(queues)
    workers: list[dict[str, Any]] = list(snap["workers"])
    if queues is not None:
        workers = [w for w in workers if set(w.get("queues", [])) & set(queues)]
    alerts: list[Alert] = []
    for queue in names:
        q = snap["queues"].get(queue)
        if q is None:
            continue
        alerts += _queue_alerts(queue, q, thresholds, now)
        for pool, n in sorted(q.get("queued_by_pool", {}).items()):
            if n > 0 and not _served(workers, queue, pool):
                alerts.append(
                    Alert(
                        Kind.NO_WORKER,
                        f"queue {queue} pool {pool}: {n} job(s) queued and no live worker "
                        "serves the pool",
                        queue=queue,
                        pool=pool,
                        value=n,
                    )
                )
    for w in sorted(workers, key=lambda w: str(w["name"])):
        if not is_healthy(w, now):
            name, host = str(w["name"]), str(w.get("host", ""))
            alerts.append(
                Alert(
                    Kind.UNHEALTHY,
                    f"worker {name} on {host or '?'}: unhealthy ({_why(w, now)})",
                    worker=name,
                    host=host,
                    value=0,
                )
            )
    return alerts


def _queue_alerts(queue: str, q: Mapping[str, Any], t: Thresholds, now: float) -> list[Alert]:
    counts = q["counts"]
    out = []
    if t.max_queued and counts["queued"] > t.max_queued:
        n = counts["queued"]
        out.append(
            Alert(
                Kind.QUEUED,
                f"queue {queue}: {n} jobs queued (threshold {t.max_queued})",
                queue=queue,
                value=n,
                threshold=t.max_queued,
            )
        )
    if t.max_dead and counts["dead"] > t.max_dead:
        n = counts["dead"]
        out.append(
            Alert(
                Kind.DEAD,
                f"queue {queue}: {n} dead jobs (threshold {t.max_dead})",
                queue=queue,
                value=n,
                threshold=t.max_dead,
            )
        )
    oldest = q.get("oldest_queued")
    age = max(now - float(oldest), 0.0) if oldest else 0.0
    if t.max_age and age > t.max_age:
        out.append(
            Alert(
                Kind.AGE,
                f"queue {queue}: oldest queued job waiting {age:.0f}s (threshold {t.max_age:g}s)",
                queue=queue,
                value=round(age, 3),
                threshold=t.max_age,
            )
        )
    return out


def _served(workers: Iterable[Mapping[str, Any]], queue: str, pool: str) -> bool:
    return any(queue in w.get("queues", []) and pool in w.get("pools", []) for w in workers)


def _why(worker: Mapping[str, Any], now: float) -> str:
    h = worker.get("health") or {}
    if h.get("dead_threads"):
        return f"{h['dead_threads']} thread(s) died"
    first = str(h.get("last_error") or "").splitlines()[0:1]
    ago = now - float(h.get("last_error_at") or now)
    return f"server error {ago:.0f}s ago" + (f": {first[0][:120]}" if first else "")


def server_alert(error: BaseException) -> Alert:
    """The monitor's own alert when it cannot read the server."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return Alert(Kind.SERVER, f"cannot read the server: {text}")


class Tracker:
    """Which alerts are active: each evaluation gives the ones that started and the ones
    that resolved since the last one (an alert whose value changes stays one alert)."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str | None, str | None, str | None], Alert] = {}

    def update(self, alerts: Iterable[Alert]) -> tuple[list[Alert], list[Alert]]:
        now = {a.key: a for a in alerts}
        started = [a for k, a in now.items() if k not in self.active]
        resolved = [a for k, a in self.active.items() if k not in now]
        self.active = now
        return started, resolved


def prefect_event(alert: Alert, resolved: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``prefect.events.emit_event`` for an alert that started
    (``fifoflow.alert.<kind>``) or resolved (``fifoflow.resolved.<kind>``)."""
    if alert.worker is not None:
        resource = {
            "prefect.resource.id": f"fifoflow.worker.{alert.worker}",
            "prefect.resource.name": alert.worker,
            "fifoflow.host": alert.host or "",
        }
    elif alert.queue is not None:
        resource = {
            "prefect.resource.id": f"fifoflow.queue.{alert.queue}",
            "prefect.resource.name": alert.queue,
        }
        if alert.pool is not None:
            resource["fifoflow.pool"] = alert.pool
    else:
        resource = {"prefect.resource.id": "fifoflow.server", "prefect.resource.name": "server"}
    state = "resolved" if resolved else "alert"
    return {
        "event": f"fifoflow.{state}.{alert.kind}",
        "resource": resource,
        "payload": alert.to_dict(),
    }
