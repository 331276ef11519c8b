"""The Lua scripts, and ``run``: the one function in fifoflow that calls one.

A script is its own file, linked at load time: the helpers of ``_common.lua`` that it uses
(directly or through each other) are put in front of it, in their order there, and every
``S.name``, ``F.name``, ``K.name`` and ``E.name`` (a status, a job field, a key suffix, a
counter) is replaced by its value from ``keys.Status``, ``keys.Field``, ``keys.Key`` and
``keys.Event``, and every ``V.name`` by a value of ``keys`` (histogram buckets, caps): the
Python definitions are the only ones, and a name they lack fails the load. (Redis runs a
script's whole text on every call, so what a script does not use would cost every call.)
The result is loaded
into the server on first use and called by SHA; a ``NOSCRIPT`` answer (first use, or a
server restart that emptied the script cache) loads it and sends the call again, once.
Only the broker calls ``run``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

from .keys import EVENTS_CAP, RUN_BUCKETS, WAIT_BUCKETS, Event, Field, Key, Status

NAMES = (
    "push",
    "stage",
    "commit",
    "claim",
    "complete",
    "extend",
    "release",
    "maintain",
    "reap_worker",
    "cancel",
    "requeue",
    "purge",
)
CONSTANTS: dict[str, type[StrEnum]] = {"S": Status, "F": Field, "K": Key, "E": Event}
CONSTANT_RE = re.compile(r"\b([SFKE])\.([a-z_]+)\b")
#: Values (not names) the scripts take from Python: ``V.name``.
VALUES: dict[str, str] = {
    "wait_buckets": "{" + ", ".join(repr(float(b)) for b in WAIT_BUCKETS) + "}",
    "run_buckets": "{" + ", ".join(repr(float(b)) for b in RUN_BUCKETS) + "}",
    "events_cap": str(EVENTS_CAP),
}
VALUE_RE = re.compile(r"\bV\.([a-z_]+)\b")
DEFINITION_RE = re.compile(r"^local (?:function )?([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
COMMENT_RE = re.compile(r"--[^\n]*")


class ScriptError(ValueError):
    """A script names a constant the enums do not define."""


def _value(m: re.Match[str]) -> str:
    try:
        return VALUES[m.group(1)]
    except KeyError:
        raise ScriptError(f"{m.group(0)}: no such value") from None


def _constant(m: re.Match[str]) -> str:
    enum = CONSTANTS[m.group(1)]
    try:
        return "'" + enum[m.group(2).upper()].value + "'"
    except KeyError:
        raise ScriptError(f"{m.group(0)}: {enum.__name__} has no {m.group(2).upper()}") from None


def _definitions(common: str) -> list[tuple[str, str]]:
    """``_common.lua`` cut into its top-level definitions, each with the comment lines
    just above it: (name, text), in order."""
    starts = []
    for m in DEFINITION_RE.finditer(common):
        start = m.start()
        while True:  # take in the comment block right above the definition
            above = common.rfind("\n", 0, start - 1) + 1
            if start == 0 or not common.startswith("--", above):
                break
            start = above
        starts.append((start, m.group(1)))
    ends = [s for s, _ in starts[1:]] + [len(common)] if starts else []
    return [(name, common[start:end]) for (start, name), end in zip(starts, ends, strict=True)]


def link(body: str, common: str) -> str:
    """The helpers ``body`` needs, then ``body``, with the constants replaced."""
    definitions = _definitions(common)
    needed: set[str] = set()
    pending = [COMMENT_RE.sub("", body)]
    while pending:
        code = pending.pop()
        for name, text in definitions:
            if name not in needed and re.search(rf"\b{name}\b", code):
                needed.add(name)
                pending.append(COMMENT_RE.sub("", text))
    helpers = "".join(text for name, text in definitions if name in needed)
    return VALUE_RE.sub(_value, CONSTANT_RE.sub(_constant, helpers + body))


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


@cache
def script(name: str) -> Script:
    if name not in NAMES:
        raise KeyError(name)
    folder = resources.files("fifoflow") / "scripts"
    source = link((folder / f"{name}.lua").read_text(), (folder / "_common.lua").read_text())
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


def run(
    conn: redis.Connection,
    name: str,
    key: str,
    args: Sequence[Any],
    *,
    before: Sequence[Sequence[Any]] = (),
) -> tuple[list[Any], Any]:
    """Run script ``name`` with KEYS = [key] and ARGV = args on ``conn``.

    ``before`` are plain commands (a BLPOP, say) sent in the same packet, ahead of the
    script, so the server runs the script the moment they finish: one hop for both. Returns
    their replies (an error reply as its exception object, not raised: the script's reply
    must still be read) and the script's reply (an error reply raises). Connection errors
    propagate with the connection in an unknown state: the caller disconnects it.
    """
    s = script(name)
    call = ("EVALSHA", s.sha, 1, key, *args)
    conn.send_packed_command(conn.pack_commands([*before, call]))  # type: ignore[no-untyped-call]
    replies: list[Any] = []
    for _ in before:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as e:
            replies.append(e)
    try:
        return replies, conn.read_response()
    except NoScriptError:
        conn.send_command("SCRIPT", "LOAD", s.source)  # type: ignore[no-untyped-call]
        conn.read_response()
        conn.send_command(*call)  # type: ignore[no-untyped-call]
        return replies, conn.read_response()
