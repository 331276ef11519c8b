"""docs/cli.md, the user reference, is written from the app (``make docs``); it must match
what the commands accept now, and name every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from fifoflow.cli import app
from fifoflow.cli.reference import render

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _paths(command: typer.core.TyperGroup, prefix: str) -> list[str]:
    ctx = typer.Context(command)
    found = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        assert sub is not None
        found.append(f"{prefix} {name}")
        if isinstance(sub, typer.core.TyperGroup):
            found += _paths(sub, f"{prefix} {name}")
    return found


def test_docs_cli_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: run `make docs` (python -m fifoflow.cli.reference docs/cli.md)"
    )


def test_every_command_is_in_the_reference_and_takes_json() -> None:
    text = DOC.read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    paths = _paths(root, "fifoflow")
    assert {"fifoflow push", "fifoflow schedule add", "fifoflow bridge"} <= set(paths)
    for path in paths:
        section = text.split(f"## `{path}`\n", 1)
        assert len(section) == 2, f"{path} is missing from docs/cli.md"
        body = section[1].split("\n## ", 1)[0]
        if "Commands:" not in body:  # a command, not a group
            assert "--json" in body, f"{path} has no --json"
