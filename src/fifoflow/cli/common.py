"""What every command shares: the consoles, one-line failures, JSON output, progress."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..broker import Broker
from ..errors import UsageError
from ..queue import Queue
from ..settings import get_settings
from ..validation import validate_name

#: Tables on a terminal fit it; piped or logged, they get room (COLUMNS still rules).
out = Console(
    highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
)
err = Console(stderr=True, highlight=False)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name [FIFOFLOW_QUEUE].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
RetriesOpt = Annotated[
    int | None, typer.Option(help="Retries after the first attempt [FIFOFLOW_RETRIES: 3].")
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(help="Seconds an attempt may take [FIFOFLOW_TIMEOUT_SECONDS: none]."),
]


def group(help: str) -> typer.Typer:
    """A command group (``dlq``, ``server``): without a subcommand, its help as bad usage."""
    sub = typer.Typer(help=help)

    @sub.callback(invoke_without_command=True)
    def _show_help(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            err.print(ctx.get_help(), markup=False, highlight=False)
            raise typer.Exit(2)

    _show_help.__doc__ = help
    return sub


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message [, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """The worker's log on stderr: ``text`` for people, ``json`` for log shippers."""
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise UsageError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise UsageError(f"unknown log format {fmt!r}: text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=number, handlers=[handler], force=True)
    # Every Prefect API call would be an INFO line of httpx's (the library leaves an API
    # user's logging alone; the command configures its own).
    if logging.getLogger("httpx").level == logging.NOTSET:
        logging.getLogger("httpx").setLevel(max(number, logging.WARNING))


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")


def open_broker() -> Broker:
    return Broker.connect()


def open_queue(name: str | None, broker: Broker | None = None) -> Queue:
    return Queue(name or get_settings().queue, broker=broker)


def queue_names(broker: Broker, queue: str | None) -> list[str]:
    return [validate_name("queue", queue)] if queue else broker.queues()


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def fmt_age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0.0, time.time() - ts)
    return f"{s:.1f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def progress(label: str) -> Progress:
    """A progress bar on stderr, shown only on a terminal."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )
