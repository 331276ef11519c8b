"""Live workers: each registers a hash with an expiry and refreshes it with its heartbeat."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from . import keys


def register(client: redis.Redis, info: dict[str, Any], ttl: float) -> None:
    name = str(info["name"])
    fields = {k: json.dumps(v) for k, v in info.items()}
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.worker(name), mapping=cast(Any, fields))
    pipe.expire(keys.worker(name), max(1, int(ttl)))
    pipe.zadd(keys.WORKERS, {name: time.time()})
    pipe.execute()


def unregister(client: redis.Redis, name: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.worker(name))
    pipe.zrem(keys.WORKERS, name)
    pipe.execute()


def live_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Workers whose registration has not expired; forgets the ones that did."""
    names = [str(n) for n in client.zrange(keys.WORKERS, 0, -1)]
    pipe = client.pipeline(transaction=False)
    for n in names:
        pipe.hgetall(keys.worker(n))
    out: list[dict[str, Any]] = []
    gone: list[str] = []
    for n, raw in zip(names, pipe.execute(), strict=True):
        if raw:
            out.append({k: json.loads(v) for k, v in raw.items()})
        else:
            gone.append(n)
    if gone:
        client.zrem(keys.WORKERS, *gone)
    return out
