"""``fifoflow demo``: a parameter sweep worked off by a Prefect dispatcher, live.

It pushes 24 parameter sets of the toy flow ``fifoflow.demo_flows:train`` onto a fresh queue
(``demo-<timestamp>``) of the default server (FIFOFLOW_URL, else the embedded one), runs a
``PrefectWorker`` with 4 slots in burst mode while a live view shows the slots and the
queue, then prints a summary table and how to see the runs in the Prefect UI. One set
always fails and ends dead after its retries; one fails once and succeeds on its retry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .queue import Queue
from .settings import Settings

TARGET = "fifoflow.demo_flows:train"
SLOTS = 4
RETRIES = 2
#: The set that always fails (a learning rate that diverges) and the one that fails once.
DIVERGES = {"lr": 3.0, "batch_size": 64, "seed": 1}
FLAKY = {"lr": 0.03, "batch_size": 16, "seed": 1, "flaky": True}


def sweep() -> list[dict[str, Any]]:
    """24 parameter sets: 4 learning rates x 3 batch sizes x 2 seeds, two of them special."""
    sets: list[dict[str, Any]] = [
        {"lr": lr, "batch_size": bs, "seed": seed}
        for lr in (0.001, 0.01, 0.03, 0.1)
        for bs in (16, 32, 64)
        for seed in (0, 1)
    ]
    sets[sets.index({"lr": 0.03, "batch_size": 16, "seed": 1})] = dict(FLAKY)
    sets[sets.index({"lr": 0.1, "batch_size": 64, "seed": 1})] = dict(DIVERGES)
    return sets


def run(json_: bool = False) -> int:
    """Run the demo; 0 when everything went as designed (the diverging set dead, the rest
    succeeded), 1 otherwise. With ``json_`` the live view goes to stderr and stdout gets
    one JSON document: the queue, the outcome counts, the flow run."""
    # Set before Prefect is first imported (it reads its settings then): the demo sends no
    # usage telemetry (nor prints Prefect's first-run notice about it over the live view),
    # and its local Prefect API may take its time to create its database.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from .prefect import PrefectWorker, quiet_prefect_console

    console = Console(stderr=json_)
    settings = Settings(retry_base_seconds=0.2, retry_max_seconds=1.0)
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    queue = Queue(name, settings=settings)
    params = sweep()
    jobs = queue.push_many(TARGET, params, retries=RETRIES)
    console.print(
        f"fifoflow demo: pushed {len(jobs)} parameter sets of [bold]{TARGET}[/] onto queue "
        f"[bold]{name}[/]; a Prefect dispatcher works them off with {SLOTS} slots."
    )
    worker = PrefectWorker(
        [name], ["fifoflow.demo_flows"], concurrency=SLOTS, settings=settings, grace=10
    )
    started = time.monotonic()
    with quiet_prefect_console(), _quiet_fifoflow_logs():
        _run_live(console, queue, worker, len(jobs))
    elapsed = time.monotonic() - started
    startup = (worker.dispatch_started or started) - started

    records = [queue.record(j.id) or {} for j in jobs]
    queue.close()
    code = _report(console, worker, params, records, elapsed, startup)
    if json_:
        statuses = [r.get("status") for r in records]
        doc = {
            "queue": name,
            "jobs": len(records),
            **{s: statuses.count(s) for s in ("succeeded", "dead")},
            "seconds": round(elapsed, 3),
            "flow_run_id": str(worker.flow_run_id) if worker.flow_run_id else None,
            "as_designed": code == 0,
        }
        sys.stdout.write(json.dumps(doc) + "\n")
    return code


def _run_live(console: Console, queue: Queue, worker: Any, total: int) -> None:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("jobs finished", total=total)
    stop = threading.Event()

    def render() -> Group:
        s = queue.stats()
        progress.update(bar, completed=s["succeeded"] + s["dead"] + s["cancelled"])
        table = Table(box=None, show_header=True, padding=(0, 2))
        for column in ("slots busy", "queued", "waiting to retry", "succeeded", "dead"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{s['running']}/{SLOTS}",
            str(s["queued"]),
            str(s["delayed"]),
            f"[green]{s['succeeded']}[/]",
            f"[red]{s['dead']}[/]" if s["dead"] else "0",
        )
        where = (
            f"Prefect parent flow run [bold]{escape(worker.run_name)}[/]"
            if worker.flow_run_id
            else "starting Prefect's local API (the first time creates its database)..."
        )
        return Group(progress, table, where)

    with Live(render(), console=console, refresh_per_second=8, transient=False) as live:

        def poll() -> None:
            while not stop.wait(0.1):
                with contextlib.suppress(Exception):
                    live.update(render())

        poller = threading.Thread(target=poll, name="demo-live", daemon=True)
        poller.start()
        try:
            worker.run(burst=True)
        finally:
            stop.set()
            poller.join(timeout=2)
            live.update(render())
    console.print()


@contextlib.contextmanager
def _quiet_fifoflow_logs() -> Iterator[None]:
    """The live view shows what the worker's log lines would: keep them off the screen."""
    logger = logging.getLogger("fifoflow")
    null = logging.NullHandler()
    old = logger.propagate
    logger.addHandler(null)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = old
        logger.removeHandler(null)


def _report(
    console: Console,
    worker: Any,
    params: list[dict[str, Any]],
    records: list[dict[str, Any]],
    elapsed: float,
    startup: float,
) -> int:
    table = Table(title="the sweep", title_justify="left")
    for column in ("lr", "batch", "seed", "status", "tries"):
        justify: Literal["left", "right"] = "right" if column != "status" else "left"
        table.add_column(column, justify=justify, no_wrap=True, min_width=len(column))
    table.add_column("accuracy / error", overflow="fold", ratio=1)
    table.add_column("flow run", no_wrap=True, min_width=8)

    def accuracy(r: dict[str, Any]) -> float:
        result = r.get("result")
        return float(result["accuracy"]) if isinstance(result, dict) else -1.0

    order = sorted(range(len(records)), key=lambda i: -accuracy(records[i]))
    best = order[0] if records and accuracy(records[order[0]]) >= 0 else None
    for i in order:
        p, r = params[i], records[i]
        status = r.get("status", "?")
        style = {"succeeded": "green", "dead": "red"}.get(status, "yellow")
        error = r.get("error") or ""
        outcome = f"{accuracy(r):.4f}" if status == "succeeded" else escape(error)
        table.add_row(
            f"{p['lr']:g}",
            str(p["batch_size"]),
            str(p["seed"]),
            f"[{style}]{status}[/]",
            str(r.get("attempts", "")),
            f"[bold]{outcome}[/] (best)" if i == best else outcome,
            (r.get("flow_run_id") or "")[:8],
            end_section=False,
        )
    console.print(table)

    succeeded = [r for r in records if r.get("status") == "succeeded"]
    dead = [r for r in records if r.get("status") == "dead"]
    retried = [r for r in succeeded if int(r.get("attempts") or 0) > 1]
    console.print(
        f"{len(records)} jobs in {elapsed - startup:.1f}s on {SLOTS} slots (after {startup:.1f}s "
        f"to start Prefect): {len(succeeded)} succeeded ({len(retried)} after a retry), "
        f"{len(dead)} dead after {RETRIES + 1} attempts."
    )
    if best is not None:
        p = params[best]
        console.print(
            f"Best: lr={p['lr']:g} batch_size={p['batch_size']} seed={p['seed']} "
            f"-> accuracy {accuracy(records[best]):.4f}."
        )
    console.print(escape(_ui_hint(worker)))

    expected_dead = [i for i, p in enumerate(params) if p == DIVERGES]
    really_dead = [i for i, r in enumerate(records) if r.get("status") == "dead"]
    if really_dead != expected_dead or len(succeeded) != len(records) - len(expected_dead):
        console.print("[red]The demo did not go as designed: see the table above.[/]")
        return 1
    return 0


def _ui_hint(worker: Any) -> str:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    run = f"'{worker.run_name}'"
    if settings.api.url:
        ui = settings.ui_url or settings.api.url
        return f"See the runs in the Prefect UI: {ui}/runs/flow-run/{worker.flow_run_id} ({run})."
    return (
        "See the runs in the Prefect UI: run `prefect server start` (same PREFECT_HOME) and "
        f"open http://127.0.0.1:4200/runs; the parent flow run is {run}, each job one of "
        "its child flow runs."
    )
