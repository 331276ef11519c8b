"""``fifoflow monitor``: the alerts of ``alerts.py``, checked once (for cron) or in a loop
that prints one line when an alert starts and one when it resolves, optionally sent to
Prefect as events (``--prefect-events``) for Prefect Automations to act on."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Annotated, Any

import redis
import typer

from .. import metrics
from ..alerts import Alert, Kind, Thresholds, Tracker, evaluate, prefect_event, server_alert
from ..errors import ServerOutOfMemory, UsageError
from ..settings import get_settings
from ..validation import validate_name
from .common import emit_json, err, fmt_time, open_broker


class PrefectEvents:
    """Alerts as Prefect events, through Prefect's own events client (PREFECT_API_URL)."""

    def __init__(self) -> None:
        try:
            from prefect.events import emit_event
            from prefect.events.worker import EventsWorker
        except ImportError as e:
            raise UsageError(
                f"--prefect-events needs Prefect: pip install 'fifoflow[prefect]' ({e})"
            ) from None
        self._emit, self._worker = emit_event, EventsWorker
        self._warned = False

    def send(self, alert: Alert, resolved: bool = False) -> None:
        if self._emit(**prefect_event(alert, resolved)) is None and not self._warned:
            self._warned = True
            err.print(
                "warning: Prefect emits no events here (set PREFECT_API_URL to your Prefect "
                "server)",
                markup=False,
                soft_wrap=True,
            )

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the events sent so far have been delivered (or ``timeout``)."""
        self._worker.drain_all(timeout=timeout)


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def monitor(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue(s) to watch [every queue]."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Check once, print the alerts, exit 1 if any.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between checks of the loop.")
    ] = 15.0,
    max_queued: Annotated[
        int | None,
        typer.Option(min=0, help="Alert above this many queued jobs in a queue; 0: off [100]."),
    ] = None,
    max_dead: Annotated[
        int | None,
        typer.Option(min=0, help="Alert above this many dead jobs in a queue; 0: off [10]."),
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(
            min=0, help="Alert when the oldest queued job waited longer (s); 0: off [600]."
        ),
    ] = None,
    prefect_events: Annotated[
        bool,
        typer.Option("--prefect-events", help="Also emit each alert as a Prefect event."),
    ] = False,
    json_: Annotated[
        bool,
        typer.Option("--json", help="JSON: one document (--once), one object a line (loop)."),
    ] = False,
) -> None:
    """Alert on long queues, dead letters, old jobs, pools without workers, sick workers."""
    if not interval > 0:  # NaN too
        raise UsageError("--interval must be > 0")
    settings = get_settings()  # a bad value: one line naming the variable
    thresholds = Thresholds.from_settings(
        settings, max_queued=max_queued, max_dead=max_dead, max_age=max_age
    )
    queues = [validate_name("queue", q) for q in queue] if queue else None
    sink = PrefectEvents() if prefect_events else None
    broker = open_broker()
    try:
        if once:
            alerts = evaluate(metrics.snapshot(broker, queues), thresholds, queues)
            if json_:
                emit_json({"ok": not alerts, "alerts": [a.to_dict() for a in alerts]})
            else:
                for a in alerts:
                    _line(a.line())
            if sink is not None:
                for a in alerts:
                    sink.send(a)
            raise typer.Exit(1 if alerts else 0)
        _loop(broker, thresholds, queues, interval, sink, json_)
    finally:
        if sink is not None:
            sink.flush()
        broker.close()


def _loop(
    broker: Any,
    thresholds: Thresholds,
    queues: list[str] | None,
    interval: float,
    sink: PrefectEvents | None,
    json_: bool,
) -> None:
    """Check every ``interval`` seconds until SIGTERM; one line per start and resolution."""
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    watched = ", ".join(queues) if queues else "every queue"
    err.print(
        f"fifoflow monitor: {watched} every {interval:g}s; alerts: {thresholds.describe()}",
        markup=False,
        soft_wrap=True,
    )
    tracker = Tracker()
    while not stop.is_set():
        try:
            alerts = evaluate(metrics.snapshot(broker, queues), thresholds, queues)
        except (redis.RedisError, ServerOutOfMemory) as e:  # active ones stay; an alert more
            alerts = [a for a in tracker.active.values() if a.kind != Kind.SERVER]
            alerts.append(server_alert(e))
        started, resolved = tracker.update(alerts)
        now = time.time()
        for a in started:
            _report(a, "firing", now, json_)
            if sink is not None:
                sink.send(a)
        for a in resolved:
            _report(a, "resolved", now, json_)
            if sink is not None:
                sink.send(a, resolved=True)
        stop.wait(interval)


def _report(alert: Alert, state: str, now: float, json_: bool) -> None:
    if json_:
        _line(json.dumps({"state": state, "time": now, **alert.to_dict()}))
    elif state == "firing":
        _line(f"{fmt_time(now)} firing {alert.line()}")
    else:
        _line(f"{fmt_time(now)} resolved {alert.kind}: {alert.subject}")
