"""Commands about schedules and backfills: ``schedule add|list|pause|resume|remove`` and
``backfill``, thin over ``Queue.schedules`` and ``fifoflow.backfill``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..backfill import backfill as run_backfill
from ..backfill import intervals
from ..errors import UsageError
from ..schedules import DEFAULT_GRACE, Schedule, utc_text
from ..schedules_api import every_schedule, of_queue
from .common import JsonOpt, QueueOpt, emit_json, open_broker, open_queue, out, progress
from .push import _parse_object

schedule_app = typer.Typer(
    help="Schedules kept in the server; workers started with --scheduler fire them.",
    no_args_is_help=True,
)

ParamsOpt = Annotated[
    str | None, typer.Option("--params", "-p", help="JSON object, or a file holding one.")
]
TzOpt = Annotated[str, typer.Option("--timezone", help="IANA timezone, e.g. Europe/Paris.")]
PoolOpt = Annotated[str, typer.Option(help="Pool of workers that may run the jobs.")]
PriorityOpt = Annotated[int, typer.Option(help="Higher starts first.")]


def read_params(text: str | None) -> dict[str, Any]:
    """``--params``: a JSON object, or the path of a file that holds one."""
    if text is None:
        return {}
    if text.lstrip().startswith("{"):
        return _parse_object(text, "--params")
    try:
        content = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--params: not a JSON object, nor a readable file ({e})") from None
    return _parse_object(content, text)


def _next(tick: int | None, now: float) -> str:
    if tick is None:
        return "-"
    text = utc_text(tick)  # 2026-10-01T06:00:00Z
    return text[11:19] if tick - now < 86400 else text[:16].replace("T", " ")


def _table(schedules: list[Schedule], now: float) -> Table:
    queues = {s.queue for s in schedules}
    one = len(queues) == 1
    table = Table(
        title=f"{len(schedules)} schedule(s)" + (f" of queue {min(queues)}" if one else "")
    )
    for col in ([] if one else ["queue"]) + ["name", "when", "target"]:
        table.add_column(col, overflow="fold")
    for col in ("catch-up", "fired", "skipped", "next (UTC)"):
        table.add_column(col, no_wrap=True)
    for s in schedules:
        when = s.spec.when + ("" if s.spec.timezone == "UTC" else f" {s.spec.timezone}")
        row = [] if one else [s.queue]
        row += [s.name, when, s.spec.target, s.spec.catchup, str(s.fired), str(s.skipped)]
        table.add_row(*row, "paused" if s.paused else _next(s.next_tick(now), now))
    return table


def _show(s: Schedule, what: str, json_: bool) -> None:
    now = time.time()
    if json_:
        emit_json(s.to_dict(now))
        return
    nxt = s.next_tick(now)
    out.print(
        f"schedule {s.name} {what} (queue {s.queue}): {s.spec.when}, "
        + ("paused" if nxt is None else f"next tick {utc_text(nxt)}"),
        markup=False,
        soft_wrap=True,
    )


@schedule_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Schedule name (unique in its queue).")],
    target: Annotated[str, typer.Argument(help="package.module:function")],
    cron: Annotated[str | None, typer.Option(help='Cron expression, e.g. "*/5 * * * *".')] = None,
    every: Annotated[str | None, typer.Option(help="Interval: 30s, 10m, 1h30m, 1d ...")] = None,
    params: ParamsOpt = None,
    timezone: TzOpt = "UTC",
    catchup: Annotated[
        str, typer.Option(help="Missed ticks: none, last (the newest of them) or all.")
    ] = "last",
    grace: Annotated[
        str, typer.Option(help="How late a tick may fire and still be on time.")
    ] = f"{DEFAULT_GRACE}s",
    param: Annotated[
        str | None, typer.Option(help="Parameter that gets each tick's time (ISO 8601).")
    ] = None,
    pool: PoolOpt = "default",
    priority: PriorityOpt = 0,
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add a schedule: TARGET pushed into the queue once per tick."""
    base = read_params(params)
    q = open_queue(queue)
    s = q.schedules.add(
        name,
        target,
        base,
        cron=cron,
        every=every,
        timezone=timezone,
        catchup=catchup,
        grace=grace,
        param=param,
        pool=pool,
        priority=priority,
    )
    _show(s, "added", json_)


@schedule_app.command("list")
def list_(queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Every schedule (of one queue with --queue): when, state, ticks fired and skipped."""
    broker = open_broker()
    schedules = (
        of_queue(broker, open_queue(queue, broker).name) if queue else every_schedule(broker)
    )
    now = time.time()
    if json_:
        emit_json({"schedules": [s.to_dict(now) for s in schedules]})
        return
    table = _table(schedules, now)
    if not schedules:
        table.caption = 'none yet: fifoflow schedule add NAME TARGET --every 1h (or --cron "...")'
    out.print(table)


@schedule_app.command("pause")
def pause(name: str, queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """No tick fires until resume."""
    _show(open_queue(queue).schedules.pause(name), "paused", json_)


@schedule_app.command("resume")
def resume(name: str, queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Fire again from the next tick on (ticks due while paused never fire)."""
    _show(open_queue(queue).schedules.resume(name), "resumed", json_)


@schedule_app.command("remove")
def remove(name: str, queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Remove a schedule (jobs it pushed stay)."""
    q = open_queue(queue)
    q.schedules.remove(name)
    if json_:
        emit_json({"queue": q.name, "removed": name})
    else:
        out.print(f"schedule {name} removed (queue {q.name})", markup=False, soft_wrap=True)


def backfill(
    target: Annotated[str, typer.Argument(help="package.module:function")],
    start: Annotated[str, typer.Option(help="First interval: 2026-10-01 or 2026-10-01T06:00.")],
    end: Annotated[str, typer.Option(help="Last interval (included).")],
    every: Annotated[str, typer.Option(help="Interval length: 1d, 1h, 15m ...")],
    param: Annotated[str, typer.Option(help="Parameter that gets each interval's value.")],
    params: ParamsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Push nothing; say what.")] = False,
    timezone: TzOpt = "UTC",
    pool: PoolOpt = "default",
    priority: PriorityOpt = 0,
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Push TARGET once per interval, oldest first; intervals pushed before are skipped."""
    base = read_params(params)
    q = open_queue(queue)
    options: dict[str, Any] = dict(
        params=base, dry_run=dry_run, timezone=timezone, pool=pool, priority=priority
    )
    total = len(intervals(start, end, every, timezone))  # checks them before connecting
    with progress("backfill") as bar:
        task = bar.add_task("backfill", total=total)
        result = run_backfill(
            q,
            target,
            start,
            end,
            every,
            param,
            on_batch=lambda n: bar.advance(task, n),
            **options,
        )
    if json_:
        emit_json(result.to_dict())
        return
    new = [i.value for i in result.intervals if i.new]
    verb = "would push" if dry_run else "pushed"
    span = f": {new[0]} .. {new[-1]}" if len(new) > 1 else (f": {new[0]}" if new else "")
    out.print(
        f"{verb} {result.pushed} job(s) to queue {q.name}{span} "
        f"({result.skipped} of {len(result.intervals)} interval(s) pushed before)",
        markup=False,
        soft_wrap=True,
    )
