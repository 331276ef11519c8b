"""The Lua scripts: read once, loaded into the server on first use, called by SHA.

``EVALSHA`` goes out directly; a ``NOSCRIPT`` answer (first use, or a server restart that
emptied the script cache) loads the script and repeats the call, once.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

NAMES = ("push", "claim", "complete", "extend", "release", "maintain", "cancel", "requeue", "purge")


@cache
def source(name: str) -> str:
    """The script's own file with the shared helpers of ``_common.lua`` in front of it."""
    if name not in NAMES:
        raise KeyError(name)
    folder = resources.files("fifoflow") / "scripts"
    return (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


@cache
def sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


def call(client: redis.Redis, name: str, key: str, *args: Any) -> Any:
    """Run script ``name`` with KEYS = [key] and ARGV = args."""
    try:
        return client.execute_command("EVALSHA", sha(name), 1, key, *args)  # type: ignore[no-untyped-call]
    except NoScriptError:
        client.script_load(source(name))
        return client.execute_command("EVALSHA", sha(name), 1, key, *args)  # type: ignore[no-untyped-call]


def call_on(conn: redis.Connection, name: str, key: str, *args: Any) -> Any:
    """The same on a connection the caller owns: the hot path of a worker slot, which skips
    the pool and the client's wrappers (about a third of the client-side cost of a call).
    Connection errors propagate; the connection reconnects on its next use."""
    try:
        conn.send_command("EVALSHA", sha(name), 1, key, *args)  # type: ignore[no-untyped-call]
        return conn.read_response()
    except NoScriptError:
        conn.send_command("SCRIPT", "LOAD", source(name))  # type: ignore[no-untyped-call]
        conn.read_response()
        conn.send_command("EVALSHA", sha(name), 1, key, *args)  # type: ignore[no-untyped-call]
        return conn.read_response()
