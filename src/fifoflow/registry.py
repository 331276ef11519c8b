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
from .topology import Topology


class WorkerRegistry:
    client: redis.Redis
    topology: Topology

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
        """Names of the workers with at least one open connection, from ``CLIENT LIST`` (of
        every master, on a cluster); None where a server refuses the command (some managed
        services do)."""
        clients: list[dict[str, Any]] = []
        for node in self.topology.primaries():
            try:
                clients += node.client_list()
            except redis.ResponseError:
                return None
            except (redis.ConnectionError, redis.TimeoutError) as e:
                self.topology.failed(None, e)  # a master lost: nothing judged this time
                raise
        prefix = keys.CONNECTION_NAME_PREFIX
        return {
            str(c["name"])[len(prefix) :]
            for c in clients
            if str(c.get("name", "")).startswith(prefix)
        }

    def server_uptime(self) -> float:
        """Seconds since the server started (on a cluster: its youngest master), or since
        this client last saw a primary move (a failover), whichever is less."""
        up = min(
            float(node.info("server").get("uptime_in_seconds", 0))
            for node in self.topology.primaries()
        )
        if self.topology.changed_at:
            up = min(up, time.monotonic() - self.topology.changed_at)
        return up
