"""Every key a script touches lives in its queue's hash slot (Redis Cluster's rule for a
script): parsed from the Lua sources, not trusted from their comments.

Each script is called with one key, ``KEYS[1]`` = the queue's prefix ``ff:{QUEUE}:``, and
builds every key it touches from a queue prefix. The check: every key argument of every
``redis.call`` (and of the ``read`` helper) is *derived from a prefix*: ``KEYS[1]``,
``X .. anything`` or ``job_key(X, ...)`` for a derived ``X``, or a name whose every
source is derived. A name's sources are its assignments and, for a function parameter,
the argument in that place at every call of the function; a name with an underived
source (a loop variable, a value read from the server, an ARGV) is underived.

The one other prefix is a job dependency's (``depends_on``): a parent may be named with
its queue, whose prefix the scripts rebuild with ``prefix_of(queue)``. That is allowed in
the dependency helpers only, and on a cluster ``Queue`` refuses a parent of another hash
slot before any script runs (tested below against the real cluster): so every key a
script touches is in the slot of its ``KEYS[1]``.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from fifoflow import Queue, UsageError, scripts

#: Commands whose first argument is a key (every command the scripts use, checked below).
ONE_KEY = {
    "EXPIRE", "GET", "HDEL", "HEXISTS", "HGET", "HINCRBY", "HMGET", "HSET", "INCR", "LLEN",
    "LPUSH", "LRANGE", "LTRIM", "PERSIST", "RPUSH", "SADD", "SET", "SMEMBERS", "SREM", "XADD",
    "ZADD", "ZCARD", "ZPOPMIN", "ZRANGE", "ZRANGEBYSCORE", "ZREM", "ZREMRANGEBYSCORE",
    "ZREVRANGEBYSCORE", "ZSCORE",
}  # fmt: skip
#: Commands whose every argument is a key.
ALL_KEYS = {"DEL", "UNLINK", "EXISTS"}
#: Commands without keys: TIME; PUBLISH names a channel (broadcast to the whole cluster).
NO_KEY = {"TIME", "PUBLISH"}
#: Where keys of a parent's queue (another prefix) may be touched: dependency bookkeeping.
DEPENDENCY_FUNCTIONS = {"finish", "parents_state", "attach"}
#: bridge.lua's raw list and its rejected list (named by the user, in ARGV): on one server
#: any key; on a cluster ``Bridge`` refuses a list outside the queue's slot (tested below).
BRIDGE_LISTS = {"source", "rejected"}
#: Table reads that hold a queue prefix: the entries of the dependency walk's stack and of
#: a push's pending parents (their constructors are checked below).
TABLE_PREFIXES = {"top[1]", "parent[1]"}

#: Helpers whose key is a parameter (``read(key, ...)``): checked at each call instead.
KEY_PARAMETER = {"read"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def sources() -> dict[str, str]:
    folder = resources.files("fifoflow") / "scripts"
    names = ("_common", "_resources", *scripts.NAMES)
    return {name: (folder / f"{name}.lua").read_text() for name in names}


def strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


def split_args(text: str, start: int) -> list[str]:
    """The comma-separated arguments of the call whose '(' is at ``start - 1``."""
    depth, args, cur, i, quote = 0, [], [], start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch in "([{":
            depth += 1
            cur.append(ch)
        elif ch in ")]}":
            if depth == 0:
                args.append("".join(cur).strip())
                return args
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    raise AssertionError("unbalanced call")


def chunks(src: dict[str, str]) -> list[tuple[str, str]]:
    """(function name, body): each helper of _common.lua and _resources.lua, and each
    script's own body."""
    out: list[tuple[str, str]] = []
    for helpers in ("_common", "_resources"):
        common = strip_comments(src[helpers])
        starts = [m.start() for m in re.finditer(r"^local function ", common, re.M)]
        for a, b in zip(starts, [*starts[1:], len(common)], strict=True):
            name = re.match(r"local function (" + IDENT + ")", common[a:])
            assert name
            out.append((name.group(1), common[a:b]))
    out += [(f"script:{n}", strip_comments(t)) for n, t in src.items() if n[0] != "_"]
    return out


def calls(text: str, fn: str) -> list[list[str]]:
    return [
        split_args(text, m.end())
        for m in re.finditer(r"(?<![A-Za-z0-9_.:])" + re.escape(fn) + r"\(", text)
    ]


class Derivation:
    """Which names hold a value derived from the queue's prefix (KEYS[1])."""

    def __init__(self, src: dict[str, str]) -> None:
        self.parts = chunks(src)
        self.text = "\n".join(body for _, body in self.parts)
        self.sources: dict[str, list[str]] = {}
        assign = r"(?:local\s+)?(" + IDENT + r"(?:\s*,\s*" + IDENT + r")*)\s*=(?!=)\s*([^\n]+)"
        for m in re.finditer(assign, self.text):
            names = [n.strip() for n in m.group(1).split(",")]
            values = split_args(m.group(2) + ")", 0) if len(names) > 1 else [m.group(2)]
            for n, v in zip(names, values, strict=False):
                self.sources.setdefault(n, []).append(v.strip())
        for m in re.finditer(r"local function (" + IDENT + r")\(([^)]*)\)", self.text):
            params = [p.strip() for p in m.group(2).split(",") if p.strip()]
            for i, p in enumerate(params):
                if p == "...":
                    continue
                for args in calls(self.text, m.group(1)):
                    # a call of fewer arguments leaves the parameter nil: not a key then
                    self.sources.setdefault(p, []).append(args[i] if i < len(args) else "nil")
        self.derived = {n for n, s in self.sources.items() if s}
        changed = True
        while changed:  # the greatest fixed point: drop names with an underived source
            changed = False
            for name in list(self.derived):
                if not all(self.expr(s) for s in self.sources[name]):
                    self.derived.discard(name)
                    changed = True

    def expr(self, e: str) -> bool:
        e = e.strip()
        if e in ("KEYS[1]", "nil") or e in TABLE_PREFIXES or e in self.derived:
            return True
        if re.fullmatch(r"prefix_of\(" + IDENT + r"\)", e):
            return True
        head = re.match(r"(" + IDENT + r"(?:\[1\])?)\s*\.\.", e)
        if head:
            return self.expr(head.group(1))
        call = re.match(r"job_key\(", e)
        if call:
            return self.expr(split_args(e, call.end())[0])
        return False


def key_args(body: str) -> list[tuple[str, str]]:
    """(command, key expression) of every server call in a chunk."""
    out: list[tuple[str, str]] = []
    for call in ("redis.call", "redis.pcall"):
        for args in calls(body, call):
            cmd = args[0].strip("'\"")
            assert re.fullmatch(r"[A-Z]+", cmd), f"a command that is not a literal: {args[0]}"
            if cmd in NO_KEY:
                continue
            assert cmd in ONE_KEY | ALL_KEYS, f"{cmd}: unknown to this check; add it above"
            out += [(cmd, a) for a in (args[1:] if cmd in ALL_KEYS else args[1:2])]
    out += [("HMGET", args[0]) for args in calls(body, "read")]
    return out


def test_every_script_takes_its_queue_prefix_as_its_one_key() -> None:
    for name, text in sources().items():
        if name.startswith("_"):  # helpers: _common.lua, _resources.lua
            continue
        assert re.search(r"^local P = KEYS\[1\]$", text, re.M), name
        assert not re.search(r"KEYS\[[2-9]", text), f"{name}: one key only"
        assert not re.search(r"ARGV\[\d+\]\s*\.\.", text), f"{name}: a key built from ARGV"


def test_every_key_a_script_touches_derives_from_its_queue_prefix() -> None:
    d = Derivation(sources())
    assert {"P", "jk", "list", "PP", "CP"} <= d.derived  # it sees the usual names
    checked = 0
    bad: list[str] = []
    for fn, body in d.parts:
        if fn in KEY_PARAMETER:
            continue  # its key is its parameter: checked at every call (key_args)
        for cmd, key in key_args(body):
            checked += 1
            if fn == "script:bridge" and key in BRIDGE_LISTS:
                continue  # the raw list: on a cluster, Bridge refuses one of another slot
            if not d.expr(key):
                bad.append(f"{fn}: {cmd} {key}")
    assert checked > 100
    assert not bad, "keys not derived from a queue prefix:\n" + "\n".join(bad)


def test_the_check_catches_an_undeclared_key() -> None:
    """The analysis is not vacuous: a key from ARGV, a global key, a loop variable fail."""
    src = sources()
    for line in (
        "redis.call('SADD', ARGV[1], 'x')",
        "redis.call('SADD', 'ff:queues', 'x')",
        "for _, k in ipairs(ARGV) do redis.call('DEL', k) end",
        "local k2 = redis.call('GET', P .. K.seq)\nredis.call('DEL', k2)",
    ):
        bad = dict(src)
        bad["purge"] = src["purge"] + "\n" + line + "\n"
        d = Derivation(bad)
        body = dict(d.parts)["script:purge"]
        assert not all(d.expr(k) for _, k in key_args(body)), line


def test_other_queues_prefixes_come_only_from_dependency_references() -> None:
    """``prefix_of`` (a queue named in a parent reference) appears in the dependency
    helpers only, and the tables read as prefixes are filled with prefixes."""
    d = Derivation(sources())
    for fn, body in d.parts:
        if "prefix_of(" in body and fn != "prefix_of":
            assert fn in DEPENDENCY_FUNCTIONS, fn
    text = d.text
    firsts = re.findall(r"stack\[#stack \+ 1\] = \{(" + IDENT + r")", text)
    firsts += re.findall(r"local stack = \{\{(" + IDENT + r")", text)
    firsts += re.findall(r"state\.pending\[#state\.pending \+ 1\] = \{([^,]+),", text)
    assert len(firsts) == 3, firsts
    assert all(d.expr(f) for f in firsts), firsts


@pytest.mark.timeout(60)
def test_a_parent_in_another_slot_is_refused_on_a_cluster(cluster: object) -> None:
    url = str(cluster.url)  # type: ignore[attr-defined]
    a, b = "parents-a", "parents-b"
    qa, qb = Queue(a, url=url), Queue(b, url=url)
    try:
        assert not qa.broker.topology.same_slot(a, b)
        parent = qb.push("m:f", {})
        with pytest.raises(UsageError, match="own queue"):
            qa.push("m:g", {}, depends_on=[parent])
        assert qa.job_ids() == []  # nothing was written
        own = qa.push("m:f", {})
        child = qa.push("m:g", {}, depends_on=[own])  # the same queue: fine
        assert child.status == "waiting"
    finally:
        qa.close()
        qb.close()


@pytest.mark.timeout(60)
def test_a_raw_list_in_another_slot_is_refused_by_the_bridge_on_a_cluster(
    cluster: object,
) -> None:
    from fifoflow.bridge import Bridge

    url = str(cluster.url)  # type: ignore[attr-defined]
    q = Queue("bridged", url=url)
    try:
        topology = q.broker.topology
        assert topology.client.keyslot("task_queue") != topology.client.keyslot("ff:{bridged}:")
        with pytest.raises(UsageError, match="hash tag"):
            Bridge(q, "task_queue", "m:f")
        raw = "{bridged}task_queue"
        q.client.lpush(raw, '{"i": 1}', "oops")
        bridge = Bridge(q, raw, "m:f")
        assert bridge.step() == (1, 1)
        assert [q.job(i).params for i in q.job_ids()] == [{"i": 1}]
        assert q.client.llen(raw + ":rejected") == 1
    finally:
        q.close()
