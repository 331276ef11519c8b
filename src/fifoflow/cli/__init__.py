"""The ``fifoflow`` command: a thin layer over the Python API.

People get rich tables and progress bars; scripts get ``--json`` (one document on stdout).
Exit codes: 0 success, 1 an operation failed, 2 bad usage or input, always as one line on
stderr, never a traceback. The commands live in ``push`` (adding jobs), ``jobs`` (queues
and jobs), ``serve`` (things that run) and ``monitor`` (alerts); this module assembles them
and maps failures to exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import redis
import typer

from ..errors import FifoflowError, UsageError
from . import jobs, monitor, push, serve
from .common import err
from .deploy import deploy
from .schedules import backfill, schedule_app

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
for command in (
    push.push,
    serve.worker,
    jobs.status,
    jobs.jobs,
    jobs.job,
    jobs.cancel,
    jobs.workers,
    jobs.wait,
    serve.demo,
    serve.dashboard,
    monitor.monitor,
):
    app.command()(command)
app.command("push-dag")(push.push_dag_command)
app.add_typer(jobs.dlq_app, name="dlq")
app.add_typer(serve.server_app, name="server")
app.command()(backfill)
app.command()(deploy)
app.add_typer(schedule_app, name="schedule")


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
