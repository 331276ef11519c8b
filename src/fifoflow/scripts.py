"""The Lua scripts, and ``run``: the one function in fifoflow that calls one.

A script's text is ``_schema.lua`` (generated from ``keys.py``), then ``_common.lua``, then
its own file. It is loaded into the server on first use and called by SHA; a ``NOSCRIPT``
answer (first use, or a server restart that emptied the script cache) loads it and sends
the call again, once. Only the broker calls ``run``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

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
#: Read in front of every script, in this order.
PRELUDE = ("_schema.lua", "_common.lua")


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
    parts = [(folder / f).read_text() for f in (*PRELUDE, f"{name}.lua")]
    source = "\n".join(parts)
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
