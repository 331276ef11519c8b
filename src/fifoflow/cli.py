"""The ``fifoflow`` command: a thin layer over the Python API.

People get rich tables and progress bars; scripts get ``--json`` (one document on stdout).
Exit codes: 0 success, 1 an operation failed, 2 bad usage or input, always as one line on
stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import registry, server
from .connection import connect
from .errors import FifoflowError, JobNotFound, UsageError
from .queue import STATUSES, Queue, encode_params, known_queues, validate_target
from .settings import get_settings

try:  # typer 0.2x vendors its own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_errors  # type: ignore[no-redef]

app = typer.Typer(
    name="fifoflow",
    help="A FIFO, greedy, lossless job queue on Redis/Valkey for Prefect flows and functions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dlq_app = typer.Typer(help="The dead-letter queue: list, requeue, purge.", no_args_is_help=True)
server_app = typer.Typer(help="The embedded Valkey server in FIFOFLOW_HOME.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(server_app, name="server")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name [FIFOFLOW_QUEUE].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")


def open_queue(name: str | None) -> Queue:
    return Queue(name or get_settings().queue)


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


# -- push -------------------------------------------------------------------------------


def _parse_object(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise UsageError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    try:
        encode_params(doc, get_settings().max_params_bytes)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: {e}") from None
    return doc


def _read_params_file(path: str) -> list[dict[str, Any]]:
    """JSON Lines, validated whole before anything is queued; blank lines are skipped."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read params file {path!r}: {e}") from None
    params = [
        _parse_object(line, f"{path} line {i}") for i, line in enumerate(lines, 1) if line.strip()
    ]
    if not params:
        raise UsageError(f"params file {path!r} has no parameter sets")
    return params


@app.command()
def push(
    target: Annotated[str, typer.Argument(help="package.module:function")],
    params: Annotated[str | None, typer.Option("--params", "-p", help="JSON object.")] = None,
    params_file: Annotated[
        str | None, typer.Option("--params-file", "-f", help="JSON Lines file, or - for stdin.")
    ] = None,
    queue: QueueOpt = None,
    priority: Annotated[int, typer.Option(help="Higher starts first.")] = 0,
    pool: Annotated[str, typer.Option(help="Pool of workers that may run it.")] = "default",
    key: Annotated[str | None, typer.Option(help="De-duplication key.")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may start.")] = None,
    retries: Annotated[int, typer.Option(help="Retries after the first attempt.")] = 3,
    timeout: Annotated[float | None, typer.Option(help="Seconds an attempt may take.")] = None,
) -> None:
    """Queue one job per parameter set; print one job id per line."""
    validate_target(target)
    if params is not None and params_file is not None:
        raise UsageError("give --params or --params-file, not both")
    if params_file is not None:
        sets = _read_params_file(params_file)
    else:
        sets = [_parse_object(params, "--params") if params is not None else {}]
    q = open_queue(queue)
    options: dict[str, Any] = dict(
        priority=priority, pool=pool, key=key, delay=delay, retries=retries, timeout=timeout
    )
    if len(sets) == 1:
        ids = [q.push(target, sets[0], **options).id]
    else:
        ids = _push_with_progress(q, target, sets, options)
    sys.stdout.write("".join(i + "\n" for i in ids))


def _progress(label: str) -> Progress:
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


def _push_with_progress(
    q: Queue, target: str, sets: list[dict[str, Any]], options: dict[str, Any]
) -> list[str]:
    with _progress("pushing") as bar:
        task = bar.add_task("push", total=len(sets))
        jobs = q.push_many(target, sets, on_batch=lambda n: bar.advance(task, n), **options)
    return [j.id for j in jobs]


# -- worker ------------------------------------------------------------------------------


@app.command()
def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules whose targets it may run.")],
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue(s), first listed first.")
    ] = None,
    pool: Annotated[list[str] | None, typer.Option("--pool", help="Pool(s) to serve.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Slots.")] = 1,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are drained.")] = False,
    prefect: Annotated[bool, typer.Option(help="Run as a Prefect parent flow.")] = False,
    processes: Annotated[
        bool, typer.Option(help="Run each slot's jobs in a child process (killable on timeout).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default host.pid.xxxx).")] = None,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get on SIGTERM.")] = 30.0,
    lease: Annotated[float | None, typer.Option(help="Lease seconds [10].")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING…")] = "INFO",
) -> None:
    """Run jobs from the queues, greedily, up to --concurrency at once."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not grace >= 0:  # NaN too
        raise UsageError("--grace must be >= 0")
    # Like celery and rq: modules in the current folder are importable.
    sys.path.insert(0, os.getcwd())
    kwargs: dict[str, Any] = dict(
        queues=queue or None,
        modules=modules,
        concurrency=concurrency,
        pools=pool or None,
        name=name,
        grace=grace,
        lease=lease,
    )
    if prefect and processes:
        raise UsageError("--prefect and --processes cannot be combined")
    if processes:
        kwargs["processes"] = True
    if prefect:
        try:
            from .prefect import PrefectWorker
        except ImportError as e:
            raise UsageError(
                f"--prefect needs Prefect: pip install 'fifoflow[prefect]' ({e})"
            ) from None
        code = PrefectWorker(**kwargs).run(burst=burst)
    else:
        from .worker import Worker

        code = Worker(**kwargs).run(burst=burst)
    raise typer.Exit(code)


# -- inspecting --------------------------------------------------------------------------


def _queue_names(client: redis.Redis, queue: str | None) -> list[str]:
    return [queue] if queue else known_queues(client)


@app.command()
def status(queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Counts per queue and status, and the number of live workers."""
    client = connect()
    counts = {n: Queue(n, client=client).stats() for n in _queue_names(client, queue)}
    workers = len(registry.live_workers(client))
    if json_:
        emit_json({"queues": counts, "workers": workers})
        return
    table = Table("queue", *STATUSES, title=f"fifoflow: {workers} worker(s) live")
    for name, c in counts.items():
        table.add_row(name, *(str(c[s]) for s in STATUSES))
    if not counts:
        table.caption = "no queues yet: fifoflow push TARGET --params '{...}'"
    out.print(table)


def _jobs_table(jobs: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for name in ("id", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("target", overflow="fold")
    table.add_column("params", overflow="fold")
    for name in ("pool", "prio", "att", "created"):
        table.add_column(name, no_wrap=True)
    table.add_column("error", overflow="fold")
    for j in jobs:
        table.add_row(
            j["id"],
            j["status"],
            j["target"],
            short(j["params"], 30),
            j["pool"],
            str(j["priority"]),
            str(j["attempts"]),
            time.strftime("%H:%M:%S", time.localtime(j["created_at"])) if j["created_at"] else "-",
            short(j["error"] or "", 40),
        )
    return table


@app.command()
def jobs(
    queue: QueueOpt = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="|".join(STATUSES))] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most N jobs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List jobs, oldest first."""
    q = open_queue(queue)
    found = q.jobs(status, limit)
    if json_:
        emit_json(found)
    else:
        out.print(_jobs_table(found, f"queue {q.name}: {len(found)} job(s)"))


def _find_job(job_id: str, queue: str | None) -> tuple[Queue, dict[str, Any]]:
    client = connect()
    for name in _queue_names(client, queue):
        q = Queue(name, client=client)
        record = q.record(job_id)
        if record is not None:
            return q, record
    raise JobNotFound(job_id)


@app.command()
def job(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One job, every field (and the traceback of its last failure)."""
    q, record = _find_job(job_id, queue)
    record["traceback"] = q.traceback(job_id)
    if json_:
        emit_json(record)
        return
    table = Table(show_header=False, title=f"job {job_id}")
    for k, v in record.items():
        if k in ("created_at", "started_at", "finished_at", "due_at") and v:
            v = f"{v:.6f} ({fmt_time(v)})"
        elif k == "traceback":
            continue
        table.add_row(k, "-" if v is None else short(v, 100))
    out.print(table)
    if record["traceback"]:
        out.print(record["traceback"], markup=False)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")], queue: QueueOpt = None) -> None:
    """A queued or delayed job becomes cancelled."""
    q, record = _find_job(job_id, queue)
    if not q.cancel(job_id):
        now = q.record(job_id) or record
        fail(f"job {job_id} is {now['status']}: only queued or delayed jobs can be cancelled", 1)
    out.print(f"cancelled {job_id}")


@app.command()
def workers(json_: JsonOpt = False) -> None:
    """Live workers and what they run."""
    live = registry.live_workers(connect())
    if json_:
        emit_json(live)
        return
    table = Table(
        "name",
        "host",
        "pid",
        "queues",
        "pools",
        "slots",
        "running",
        "done",
        "heartbeat",
        title=f"{len(live)} worker(s)",
    )
    for w in live:
        table.add_row(
            w["name"],
            w["host"],
            str(w["pid"]),
            ",".join(w["queues"]),
            ",".join(w["pools"]),
            str(w["concurrency"]),
            str(len(w["running"])),
            str(w.get("processed", 0)),
            fmt_age(w["heartbeat"]),
        )
    out.print(table)


@app.command()
def wait(
    queue: QueueOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after S seconds (exit 1).")] = None,
    interval: Annotated[float, typer.Option(hidden=True)] = 0.2,
) -> None:
    """Block until nothing is queued, delayed or running."""
    if timeout is not None and not timeout >= 0:  # NaN too
        raise UsageError("--timeout must be >= 0")
    client = connect()
    names = _queue_names(client, queue)
    queues = [Queue(n, client=client) for n in names]

    def pending() -> int:
        return sum(c["queued"] + c["delayed"] + c["running"] for c in (q.stats() for q in queues))

    deadline = None if timeout is None else time.monotonic() + timeout
    left = pending()
    total = left
    with _progress("waiting") as bar:
        task = bar.add_task("wait", total=total)
        while left > 0:
            if deadline is not None and time.monotonic() >= deadline:
                fail(f"timed out after {timeout:g}s with {left} job(s) still pending", 1)
            time.sleep(interval)
            left = pending()
            total = max(total, left)
            bar.update(task, total=total, completed=total - left)


# -- dead letters --------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    queue: QueueOpt = None,
    limit: Annotated[int | None, typer.Option(min=0)] = None,
    json_: JsonOpt = False,
) -> None:
    """Dead jobs, oldest first."""
    q = open_queue(queue)
    dead = q.dead_letters(limit)
    if json_:
        emit_json(dead)
    else:
        out.print(_jobs_table(dead, f"dead letters of {q.name}: {len(dead)}"))


@dlq_app.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead job.")] = False,
    queue: QueueOpt = None,
) -> None:
    """Put dead jobs back at their places in line, with fresh retries."""
    if bool(ids) == all_:
        raise UsageError("give job ids or --all")
    q = open_queue(queue)
    if ids:
        for i in ids:
            record = q.record(i)
            if record is None:
                raise JobNotFound(i)
            if record["status"] != "dead":
                raise UsageError(f"job {i} is {record['status']}, not dead")
    done = q.requeue(ids if ids else None)
    out.print(f"requeued {len(done)} job(s)")


@dlq_app.command("purge")
def dlq_purge(queue: QueueOpt = None) -> None:
    """Delete every dead job of the queue."""
    q = open_queue(queue)
    out.print(f"purged {q.purge_dead()} dead job(s) from {q.name}")


# -- embedded server ------------------------------------------------------------------------


def _server_home() -> Path:
    settings = get_settings()
    if settings.url:
        err.print(f"note: FIFOFLOW_URL is set; the embedded server in {settings.home} is not used")
    return settings.home


@server_app.command("start")
def server_start() -> None:
    """Start the embedded server (a no-op if it runs)."""
    settings = get_settings()
    home = _server_home()
    url = server.ensure_running(home, settings.appendfsync)
    out.print(f"embedded server running at {url} (pid {server.read_pid(server.Paths(home))})")


@server_app.command("status")
def server_status(json_: JsonOpt = False) -> None:
    """URL, pid, memory, uptime and persistence of the embedded server."""
    info = server.status(_server_home())
    if json_:
        emit_json(info or {"running": False})
    elif info is None:
        fail("the embedded server is not running (fifoflow server start)", 1)
    else:
        table = Table(show_header=False, title="embedded server")
        for k, v in info.items():
            table.add_row(k, str(v))
        out.print(table)
    if info is None:
        raise typer.Exit(1)


@server_app.command("stop")
def server_stop() -> None:
    """Stop the embedded server, flushing its append-only file."""
    pid = server.stop(_server_home())
    out.print("the embedded server was not running" if pid is None else f"stopped (pid {pid})")


# -- demo -------------------------------------------------------------------------------------


@app.command()
def demo() -> None:
    """Push a parameter sweep and work it off with a Prefect dispatcher, live."""
    try:
        from .demo import run
    except ImportError as e:
        raise UsageError(f"the demo needs Prefect: pip install 'fifoflow[prefect]' ({e})") from None
    raise typer.Exit(run())


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8765,
) -> None:
    """The web dashboard (loopback only unless told otherwise)."""
    from .dashboard import make_server

    try:
        httpd = make_server(host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    err.print(f"fifoflow dashboard on http://{host}:{httpd.server_port}/ (Ctrl-C stops it)")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


# -- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the app, turning every known failure into one line and the contract's exit code."""
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, click returns an Exit's code instead of raising it.
        rv = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="fifoflow",
            standalone_mode=False,
        )
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except click_errors.NoArgsIsHelpError as e:
        err.print(e.format_message(), markup=False)
        code = 2
    except click_errors.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        ctx = e.ctx.command_path if e.ctx else "fifoflow"
        err.print(f"error: {msg} (see {ctx} --help)", markup=False, soft_wrap=True)
        code = 2
    except click_errors.ClickException as e:
        err.print(f"error: {e.format_message()}", markup=False, soft_wrap=True)
        code = 2
    except typer.Abort:
        err.print("aborted", markup=False)
        code = 130
    except UsageError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        code = 2
    except (TypeError, ValueError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        code = 2
    except FifoflowError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        code = e.exit_code
    except redis.RedisError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        err.print(f"error: server error: {first}", markup=False, soft_wrap=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 1
    except Exception as e:  # a bug: still one line, the traceback only on request
        if os.environ.get("FIFOFLOW_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        err.print(
            f"error: internal error: {type(e).__name__}: {first} (set FIFOFLOW_DEBUG=1 "
            "for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        code = 1
    sys.stdout.flush()
    sys.exit(code)
