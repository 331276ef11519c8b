"""Commands that run something: worker, the embedded server, the dashboard, the demo."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import server
from ..errors import UsageError
from ..resources import Capacity, parse_gpus, parse_mem, parse_pairs
from ..settings import get_settings
from .common import JsonOpt, emit_json, err, fail, group, out, setup_logging

server_app = group("The embedded Valkey server in FIFOFLOW_HOME.")


def _capacity(
    gpus: str | None, mem: str | None, cpus: float | None, pairs: list[str]
) -> Capacity | None:
    """--gpus/--mem/--cpus/--resource as the worker's capacity (None: none declared)."""
    if gpus is None and mem is None and cpus is None and not pairs:
        return None
    return Capacity.declare(
        parse_gpus(gpus) if gpus is not None else [],
        cpus,
        None if mem is None else parse_mem(mem),
        parse_pairs(pairs),
    )


def worker(
    modules: Annotated[list[str], typer.Argument(help="Modules whose targets it may run.")],
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue(s), first listed first.")
    ] = None,
    pool: Annotated[list[str] | None, typer.Option("--pool", help="Pool(s) to serve.")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Slots [FIFOFLOW_CONCURRENCY, else 1; with capacity: as fit].",
        ),
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are drained.")] = False,
    prefect: Annotated[bool, typer.Option(help="Run as a Prefect parent flow.")] = False,
    run_name: Annotated[
        str | None,
        typer.Option(
            "--run-name",
            help="With --prefect: child flow run names from params, e.g. 'lr={lr}-bs={bs}'.",
        ),
    ] = None,
    job_events: Annotated[
        bool,
        typer.Option(help="With --prefect: emit each job's lifecycle as Prefect events."),
    ] = True,
    deployment: Annotated[
        str | None,
        typer.Option(help="With --prefect: run each job as a run of this FLOW/DEPLOYMENT."),
    ] = None,
    work_queue: Annotated[
        str | None, typer.Option(help="With --deployment: the work pool's queue for the runs.")
    ] = None,
    start_timeout: Annotated[
        float,
        typer.Option(help="With --deployment: seconds a run may wait for a pool worker."),
    ] = 300.0,
    processes: Annotated[
        bool, typer.Option(help="Run each slot's jobs in a child process (killable on timeout).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default host.pid.xxxx).")] = None,
    grace: Annotated[float, typer.Option(help="Seconds running jobs get on SIGTERM.")] = 30.0,
    lease: Annotated[float | None, typer.Option(help="Lease seconds [10].")] = None,
    max_lost: Annotated[
        int | None,
        typer.Option(min=0, help="A job whose worker is lost more often is dead [2]."),
    ] = None,
    max_abandoned: Annotated[
        int | None,
        typer.Option(min=1, help="Abandoned threads (timed-out jobs) before a restart [8]."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface of --metrics-port.")] = "127.0.0.1",
    max_jobs: Annotated[
        int | None, typer.Option(min=1, help="Exit 0 after running this many jobs.")
    ] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler", help="Also fire the queues' schedules (any number of workers may)."
        ),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING…")] = "INFO",
    log_format: Annotated[
        str, typer.Option("--log-format", help="text, or json: one object a line for shippers.")
    ] = "text",
    gpus: Annotated[
        str | None,
        typer.Option("--gpus", help="GPU ids it has: auto or 0,1,2,3 (needs --processes)."),
    ] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="Memory it has for jobs: 64G.")] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPUs it has [all].")] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Any other amount it has: NAME=N; repeatable."),
    ] = None,
    strict_fifo: Annotated[
        bool, typer.Option("--strict-fifo", help="Nothing passes a head that cannot start.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="At exit, one JSON document: name, jobs, attempts.")
    ] = False,
) -> None:
    """Run jobs from the queues, greedily, up to --concurrency at once."""
    setup_logging(log_level, log_format)
    if not grace >= 0:  # NaN too
        raise UsageError("--grace must be >= 0")
    if run_name is not None and not prefect:
        raise UsageError("--run-name names Prefect flow runs: it needs --prefect")
    if (deployment or work_queue) and not prefect:
        raise UsageError("--deployment and --work-queue need --prefect")
    if deployment and processes:
        raise UsageError("--deployment runs jobs on the work pool: --processes does not apply")
    # Like celery and rq: modules in the current folder are importable.
    sys.path.insert(0, os.getcwd())
    settings = get_settings()
    if concurrency is None and "concurrency" in settings.model_fields_set:
        concurrency = settings.concurrency  # FIFOFLOW_CONCURRENCY; unset: 1, or as many as fit
    kwargs: dict[str, Any] = dict(
        queues=queue or None,
        modules=modules,
        concurrency=concurrency,
        pools=pool or None,
        name=name,
        grace=grace,
        lease=lease,
        processes=processes,
        max_lost=max_lost,
        max_abandoned=max_abandoned,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        max_jobs=max_jobs,
        scheduler=scheduler,
        capacity=_capacity(gpus, mem, cpus, resource or []),
        strict_fifo=strict_fifo,
    )
    if prefect:
        try:
            from ..prefect import PrefectWorker
        except ImportError as e:
            raise UsageError(
                f"--prefect needs Prefect: pip install 'fifoflow[prefect]' ({e})"
            ) from None
        kwargs.update(deployment=deployment, work_queue=work_queue, start_timeout=start_timeout)
        w: Any = PrefectWorker(run_name=run_name, events=job_events, **kwargs)
    else:
        from ..worker import Worker

        w = Worker(**kwargs)
    code = w.run(burst=burst)
    from ..worker import EXIT_RESTART

    if code == EXIT_RESTART:
        # A fresh process sheds the abandoned threads; same arguments, same pid.
        logging.getLogger("fifoflow.worker").warning("re-executing the worker afresh")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "fifoflow", *sys.argv[1:]])
    if json_:
        emit_json(
            {"name": w.name, "exit_code": code, "jobs": w.slots.finished, "attempts": w.processed}
        )
    raise typer.Exit(code)


# -- embedded server ------------------------------------------------------------------------


def _server_home() -> Path:
    settings = get_settings()
    if settings.url:
        err.print(
            f"note: FIFOFLOW_URL (or REDIS_URL) is set; the embedded server in {settings.home} "
            "is not used",
            markup=False,
            soft_wrap=True,
        )
    return settings.home


@server_app.command("start")
def server_start(json_: JsonOpt = False) -> None:
    """Start the embedded server (a no-op if it runs)."""
    settings = get_settings()
    home = _server_home()
    url = server.ensure_running(home, settings.appendfsync)
    pid = server.read_pid(server.Paths(home))
    if json_:
        emit_json({"running": True, "url": url, "pid": pid, "home": str(home)})
    else:
        out.print(f"embedded server running at {url} (pid {pid})", markup=False)


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
def server_stop(json_: JsonOpt = False) -> None:
    """Stop the embedded server, flushing its append-only file."""
    pid = server.stop(_server_home())
    if json_:
        emit_json({"stopped": pid is not None, "pid": pid})
    else:
        out.print("the embedded server was not running" if pid is None else f"stopped (pid {pid})")


# -- demo and dashboard -------------------------------------------------------------------------


def demo(
    json_: Annotated[
        bool, typer.Option("--json", help="The live view on stderr; a JSON summary on stdout.")
    ] = False,
) -> None:
    """Push a parameter sweep and work it off with a Prefect dispatcher, live."""
    try:
        from ..demo import run
    except ImportError as e:
        raise UsageError(f"the demo needs Prefect: pip install 'fifoflow[prefect]' ({e})") from None
    raise typer.Exit(run(json_))


def dashboard(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8765,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Allow requeue, purge and cancel, with a token (FIFOFLOW_DASHBOARD_TOKEN, "
            "or one printed at start).",
        ),
    ] = False,
    allow_push: Annotated[
        bool,
        typer.Option(
            "--allow-push",
            help="Accept jobs by POST /api/jobs (JSON), with the same token.",
        ),
    ] = False,
    prefect_ui: Annotated[
        str | None, typer.Option(help="Prefect UI base URL for flow-run links [PREFECT_UI_URL].")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="At start, one JSON document: url, token, what is on.")
    ] = False,
) -> None:
    """The web dashboard (loopback only unless told otherwise; read-only by default)."""
    from ..broker import Broker
    from ..dashboard import Config, DashboardServer, create_app
    from ..dashboard.security import new_token

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env_token = os.environ.get("FIFOFLOW_DASHBOARD_TOKEN") or None
    token = (env_token or new_token()) if allow_actions or allow_push else None
    ui = prefect_ui or os.environ.get("PREFECT_UI_URL") or "http://127.0.0.1:4200"
    config = Config(
        allow_actions=allow_actions, allow_push=allow_push, token=token, prefect_ui=ui.rstrip("/")
    )
    app = create_app(Broker.connect(), config)
    try:
        srv = DashboardServer(app, host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if json_:
        emit_json(
            {
                "url": srv.url,
                "actions": allow_actions,
                "push": allow_push,
                "token": token,
                "token_from_env": bool(env_token),
            }
        )
        sys.stdout.flush()
    err.print(f"fifoflow dashboard on {srv.url}/ (Ctrl-C stops it)", markup=False, soft_wrap=True)
    allowed = " and ".join(w for w, on in (("actions", allow_actions), ("push", allow_push)) if on)
    if token and not env_token and not json_:
        err.print(f"{allowed} token: {token}", markup=False, soft_wrap=True)
    elif token:
        where = "from FIFOFLOW_DASHBOARD_TOKEN" if env_token else "in the JSON document"
        err.print(f"{allowed} token: {where}", markup=False)
    else:
        err.print("read-only (start with --allow-actions for requeue, purge, cancel)")
    srv.run()
