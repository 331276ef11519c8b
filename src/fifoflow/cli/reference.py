"""``docs/cli.md``: the command reference, written from the app itself, so it cannot drift
from what the commands accept. ``make docs`` writes it (``python -m fifoflow.cli.reference
docs/cli.md``); ``tests/test_cli_reference.py`` fails when the file is out of date."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

WIDTH = 100

HEADER = """# fifoflow command reference

Written by `make docs` from the commands themselves (`src/fifoflow/cli/reference.py`); a test
fails when this file and the commands disagree. The quickstart is in the
[README](../README.md); how it works inside, in [architecture.md](architecture.md).

Every command:

- takes `--json` and then prints one JSON document on stdout (`worker`, `dashboard` and
  `bridge` print theirs at exit or at start, as their help says; `monitor` without `--once`
  prints one object a line);
- exits **0** on success, **1** when an operation failed (a full queue, a job that failed, a
  timeout, `wait --fail-on-dead` with dead jobs, a server that cannot be reached or refuses
  the credentials: try again later), **2** for bad usage or bad input (a malformed URL or
  configuration value included), always with one line on stderr, never a traceback;
- never prints a password of a server URL (`redis://:***@host`).

Configuration: `FIFOFLOW_URL` (else `REDIS_URL`, else an embedded server in
`FIFOFLOW_HOME`, default `~/.fifoflow`), `FIFOFLOW_QUEUE` (default `default`),
`FIFOFLOW_CONCURRENCY`, `FIFOFLOW_TIMEOUT_SECONDS`, `FIFOFLOW_RETRIES` and the others in the
README. `fifoflow --version` prints the version (`--version --json`: `{"version": ...}`).
"""


def _walk(command: Any, ctx: typer.Context, path: str) -> list[str]:
    parts = [f"## `{path}`\n", "```text", command.get_help(ctx).rstrip(), "```\n"]
    if hasattr(command, "list_commands"):  # a group: its commands, in the order listed
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sub_ctx = typer.Context(sub, parent=ctx, info_name=name, max_content_width=WIDTH)
            sub_ctx.terminal_width = WIDTH
            parts += _walk(sub, sub_ctx, f"{path} {name}")
    return parts


def render() -> str:
    from . import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="fifoflow", max_content_width=WIDTH)
    ctx.terminal_width = WIDTH
    return HEADER + "\n" + "\n".join(_walk(command, ctx, "fifoflow"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
