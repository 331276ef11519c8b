"""The Redis key schema: the one place that knows key names.

Every key of one queue starts with ``ff:{QUEUE}:`` so all of them hash to one slot (the
``{QUEUE}`` hash tag) and a Lua script can touch any of them, on a single server or on
Redis Cluster. The scripts derive per-pool and per-job key names from that same prefix
(see ``scripts/_common.lua``); this module mirrors those names for Python callers.
"""

from __future__ import annotations

import hashlib
import re

#: Queue and pool names: printable, no braces (they would break the hash tag), no colons.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

#: Set of every queue name that has ever been pushed to (its own slot, never in a script).
QUEUES = "ff:queues"
#: Sorted set of live worker names, scored by their last heartbeat.
WORKERS = "ff:workers"


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def prefix(queue: str) -> str:
    return f"ff:{{{queue}}}:"


def job(queue: str, job_id: str) -> str:
    return f"{prefix(queue)}job:{job_id}"


def ready(queue: str, pool: str) -> str:
    return f"{prefix(queue)}ready:{pool}"


def wake(queue: str, pool: str) -> str:
    return f"{prefix(queue)}wake:{pool}"


def pools(queue: str) -> str:
    return f"{prefix(queue)}pools"


def zset(queue: str, name: str) -> str:
    """The per-status sets: delayed, retry, running, succeeded, dead, cancelled."""
    return f"{prefix(queue)}{name}"


def meta(queue: str) -> str:
    return f"{prefix(queue)}meta"


def worker(name: str) -> str:
    return f"ff:worker:{name}"


def id_suffix(queue: str) -> str:
    """Four hex digits of the queue name, appended to job ids so ids are unique across queues."""
    return hashlib.sha1(queue.encode()).hexdigest()[:4]
