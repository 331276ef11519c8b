"""The registry of live workers, and what a worker can learn of the others: each worker
keeps a hash with an expiry (refreshed by its heartbeat) and a score in ``ff:workers``; its
connections carry its name (``ffw:NAME``), which ``CLIENT LIST`` shows while it lives.
Also the cheap looks a worker's services take: jobs running, where a claim could take one."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from . import keys
from .keys import Key
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

    def watch_lock(self, name: str, ttl: float, held: bool = True) -> bool:
        """True while ``name`` holds the watcher's lock (taken, or renewed, for ``ttl``).
        ``held=False``: it did not hold it at its last try, so one command tells (an idle
        fleet's many non-holders cost one ``SET NX`` a try each)."""
        ms = max(1, int(ttl * 1000))
        if held and self.client.get(keys.WATCHER) == name:
            return bool(self.client.pexpire(keys.WATCHER, ms))  # False: it expired just now
        return bool(self.client.set(keys.WATCHER, name, px=ms, nx=True))

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

    def fleet_size(self) -> int:
        return int(self.client.zcard(keys.WORKERS))

    def due_in(self, queues: Sequence[str], pools: Sequence[str]) -> list[float]:
        """Per queue, seconds until a claim there could take a job (server clock): 0 when
        a served pool has one ready or a delayed or retrying job or an expired lease is due
        now, -1 when nothing is scheduled. One round trip for all of them: a worker serving
        many queues claims only where something can be taken."""
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        for q in queues:
            pipe.exists(*[keys.ready(q, p) for p in pools])
            for k in (Key.DELAYED, Key.RETRY, Key.RUNNING):
                pipe.zrange(keys.queue_key(q, k), 0, 0, withscores=True)
        replies = pipe.execute()
        now = int(replies[0][0]) + int(replies[0][1]) / 1e6
        out: list[float] = []
        for i in range(len(queues)):
            ready, *heads = replies[1 + 4 * i : 5 + 4 * i]
            due = [float(h[0][1]) for h in heads if h]
            out.append(0.0 if ready else max(min(due) - now, 0.0) if due else -1.0)
        return out

    def running_count(self, queues: Sequence[str]) -> int:
        """Jobs running in these queues, all workers together."""
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.zcard(keys.queue_key(q, Key.RUNNING))
        return sum(pipe.execute())

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
