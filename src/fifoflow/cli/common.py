"""What every command shares: the consoles, one-line failures, JSON output, progress."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..broker import Broker
from ..queue import Queue
from ..settings import get_settings
from ..validation import validate_name

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name [FIFOFLOW_QUEUE].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


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
