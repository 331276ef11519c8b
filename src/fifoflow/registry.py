"""The registry of live workers, and what a worker can learn of the others: each worker
keeps a hash with an expiry (refreshed by its heartbeat) and a score in ``ff:workers``; its
connections carry its name (``ffw:NAME``), which ``CLIENT LIST`` shows while it lives."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from . import keys


class WorkerRegistry:
    client: redis.Redis

    def register_worker(self, info: Mapping[str, Any], ttl: float) -> None:
        """A live worker: a hash with an expiry, refreshed by its heartbeat."""
        name = str(info["name"])
        fields = {k: json.dumps(v) for k, v in info.items()}
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(keys.worker(name), mapping=fields)  # type: ignore[arg-type]
        pipe.expire(keys.worker(name), max(1, int(ttl)))
        pipe.zadd(keys.WORKERS, {name: time.time()})
        pipe.execute()

    def unregister_worker(self, name: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.worker(name))
        pipe.zrem(keys.WORKERS, name)
        pipe.execute()

    def watch_lock(self, name: str, ttl: float) -> bool:
        """True while ``name`` holds the watcher's lock (taken, or renewed, for ``ttl``)."""
        ms = max(1, int(ttl * 1000))
        if self.client.set(keys.WATCHER, name, px=ms, nx=True):
            return True
        if self.client.get(keys.WATCHER) == name:
            self.client.pexpire(keys.WATCHER, ms)
            return True
        return False

    def live_workers(self) -> list[dict[str, Any]]:
        """Workers whose registration has not expired; forgets the ones that did."""
        names = [str(n) for n in self.client.zrange(keys.WORKERS, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
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
            self.client.zrem(keys.WORKERS, *gone)
        return out

    def connected_workers(self) -> set[str] | None:
        """Names of the workers with at least one open connection, from ``CLIENT LIST``;
        None where the server refuses the command (some managed services do)."""
        try:
            clients = self.client.client_list()
        except redis.ResponseError:
            return None
        prefix = keys.CONNECTION_NAME_PREFIX
        return {
            str(c["name"])[len(prefix) :]
            for c in clients
            if str(c.get("name", "")).startswith(prefix)
        }

    def server_uptime(self) -> float:
        return float(self.client.info("server").get("uptime_in_seconds", 0))
