"""The Lua scripts, served as one Redis *function library*, and ``run``: the one function
in fifoflow that calls one.

Each ``scripts/NAME.lua`` is the body of one function (``KEYS`` and ``ARGV`` as in a
script); ``_common.lua`` holds the helpers they share. ``library()`` builds the library:
the helpers once, then each body registered as ``ff_VERSION_NAME``, where VERSION is a hash
of the whole text, so two versions of fifoflow can share a server. Every ``S.name``,
``F.name``, ``K.name``, ``E.name`` and ``H.name`` (a status, a job field, a key suffix, a
counter, a schedule field) is replaced by its value from ``keys.Status``, ``keys.Field``,
``keys.Key``, ``keys.Event`` and ``keys.ScheduleField``: the Python enums are the one
definition, and a name they lack fails the build.

A library is loaded once per server (``FUNCTION LOAD``; it persists and replicates), not
run again on every call as a script's text is: the helpers cost nothing per call. A call
to a function the server does not have (first use, or a server that lost it) loads the
library and sends the call again, once. Needs Redis 7 or Valkey 7.2 (``connection`` checks).
Only the broker calls ``run``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import redis

from .keys import (
    DEFAULT_POOL,
    DEFAULT_RETRIES,
    EVENTS_CAP,
    RES_SCAN,
    RUN_BUCKETS,
    WAIT_BUCKETS,
    Event,
    Field,
    Key,
    ScheduleField,
    Status,
)

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
    "bridge",
    "once",
    "capacity",
)
CONSTANTS: dict[str, type[StrEnum]] = {
    "S": Status,
    "F": Field,
    "K": Key,
    "E": Event,
    "H": ScheduleField,
}
CONSTANT_RE = re.compile(r"\b([SFKEH])\.([a-z_]+)\b")
#: Values (not names) the scripts take from Python: ``V.name``.
VALUES: dict[str, str] = {
    "wait_buckets": "{" + ", ".join(repr(float(b)) for b in WAIT_BUCKETS) + "}",
    "run_buckets": "{" + ", ".join(repr(float(b)) for b in RUN_BUCKETS) + "}",
    "events_cap": str(EVENTS_CAP),
    "res_scan": str(RES_SCAN),
    "default_pool": repr(DEFAULT_POOL),
    "default_retries": repr(str(DEFAULT_RETRIES)),
}
VALUE_RE = re.compile(r"\bV\.([a-z_]+)\b")


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


def resolve(text: str) -> str:
    """``text`` with every constant name in code (not in comments) replaced by its value."""
    lines = []
    for line in text.split("\n"):
        code, dashes, comment = line.partition("--")
        lines.append(VALUE_RE.sub(_value, CONSTANT_RE.sub(_constant, code)) + dashes + comment)
    return "\n".join(lines)


@dataclass(frozen=True)
class Library:
    name: str
    source: str
    #: script name -> the function name it is registered under
    functions: dict[str, str]


def _read(name: str) -> str:
    return (resources.files("fifoflow") / "scripts" / name).read_text()


@cache
def library() -> Library:
    common = resolve(_read("_common.lua")) + "\n" + resolve(_read("_resources.lua"))
    bodies = {name: resolve(_read(f"{name}.lua")) for name in NAMES}
    version = hashlib.sha1("".join([common, *bodies.values()]).encode()).hexdigest()[:12]
    functions = {name: f"ff_{version}_{name}" for name in NAMES}
    parts = [f"#!lua name=fifoflow_{version}", common]
    for name, body in bodies.items():
        parts.append(
            f"redis.register_function('{functions[name]}', function(KEYS, ARGV)\n{body}\nend)\n"
        )
    return Library(f"fifoflow_{version}", "\n".join(parts), functions)


def command(name: str, key: str, args: Sequence[Any]) -> tuple[Any, ...]:
    """The command that runs function ``name`` with KEYS = [key] and ARGV = args."""
    return ("FCALL", library().functions[name], 1, key, *args)


def pipelined(
    conn: redis.Connection,
    name: str,
    key: str,
    calls: Iterable[Sequence[Any]],
    accepted: Callable[[int, Any], bool],
) -> int:
    """Run function ``name`` once per args in ``calls``, in order, with at most two
    unanswered on ``conn``: the next is taken from ``calls`` (built, if it is built lazily)
    and sent while the server runs the one before. ``accepted(i, reply)`` judges each
    reply; after the first it refuses (or an error reply) nothing more is sent, and what
    was sent is read, so the connection stays in step. Returns how many were accepted in
    a row from the first. Connection errors propagate (the connection is then in an
    unknown state). The function library must be loaded already (``run`` loads it)."""
    pending = iter(calls)
    upcoming = next(pending, None)
    accepted_n = answered = sent = 0
    failed = False
    while True:
        while not failed and upcoming is not None and sent - answered < 2:
            packed = conn.pack_command(*command(name, key, upcoming))  # type: ignore[no-untyped-call]
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            sent += 1
            upcoming = next(pending, None)
        if answered == sent:
            return accepted_n
        try:
            reply = conn.read_response()
            ok = not failed and accepted(answered, reply)
        except redis.ResponseError:
            ok = False
        answered += 1
        if ok:
            accepted_n += 1
        else:
            failed = True


def run(
    conn: redis.Connection,
    name: str,
    key: str,
    args: Sequence[Any],
    *,
    before: Sequence[Sequence[Any]] = (),
    after: Sequence[Sequence[Any]] = (),
    meanwhile: Callable[[], object] | None = None,
) -> tuple[list[Any], Any]:
    """Run function ``name`` with KEYS = [key] and ARGV = args on ``conn``.

    ``before`` are plain commands (a BLPOP, say) sent in the same packet, ahead of the
    script, so the server runs the script the moment they finish: one hop for both;
    ``after`` are sent behind it (a WAIT for replicas: it covers the script's writes).
    ``meanwhile`` is called once the packet is sent, before any reply is read (the
    dispatcher watches its other nodes then). Returns the replies of ``before`` and
    ``after``, in order (an error reply as its exception object, not raised: the script's
    reply must still be read), and the script's reply (an error reply raises). Connection
    errors propagate with the connection in an unknown state: the caller disconnects it.
    """
    lib = library()
    call = command(name, key, args)
    conn.send_packed_command(conn.pack_commands([*before, call, *after]))  # type: ignore[no-untyped-call]
    if meanwhile is not None:
        meanwhile()
    replies = [_reply(conn) for _ in before]
    try:
        reply, tail = _read_call(conn, after)
    except redis.ResponseError as e:
        if "function not found" not in str(e).lower():
            raise
        conn.send_command("FUNCTION", "LOAD", lib.source)  # type: ignore[no-untyped-call]
        try:
            conn.read_response()
        except redis.ResponseError as e:  # another process loaded it meanwhile
            if "already exists" not in str(e):
                raise
        conn.send_packed_command(conn.pack_commands([call, *after]))  # type: ignore[no-untyped-call]
        reply, tail = _read_call(conn, after)
    return [*replies, *tail], reply


def _read_call(conn: redis.Connection, after: Sequence[Sequence[Any]]) -> tuple[Any, list[Any]]:
    """The script's reply and those of the commands behind it; the script's error reply
    is raised once they are read too (the connection stays in step)."""
    try:
        reply = conn.read_response()
    except redis.ResponseError as e:
        _ = [_reply(conn) for _ in after]
        raise e from None
    return reply, [_reply(conn) for _ in after]


def _reply(conn: redis.Connection) -> Any:
    try:
        return conn.read_response()
    except redis.ResponseError as e:
        return e
