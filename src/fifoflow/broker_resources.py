"""The broker's resources side: workers' capacity records (``capacity.lua``) and what the
CLI shows of them: capacity and use per worker, and why the head of a line waits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from . import keys
from .keys import Field, Key, Status
from .resources import GPU, SLOTS, Capacity


@dataclass
class WorkerUse:
    """A live resource worker of one queue, as its record and its running jobs say."""

    name: str
    host: str
    pools: list[str]
    cap: dict[str, float]
    gpu_ids: list[str]
    free: dict[str, float] = field(default_factory=dict)
    free_ids: list[str] = field(default_factory=list)

    def used(self, name: str) -> float:
        return self.cap.get(name, 0) - self.free.get(name, 0)


def _need(text: str | None) -> dict[str, float]:
    need: dict[str, float] = json.loads(text) if text else {}
    return {**need, SLOTS: 1}


def fits(need: dict[str, float], free: dict[str, float]) -> bool:
    return all(v <= 0 or free.get(r, 0) + 1e-9 >= v for r, v in need.items())


class ResourceSide:
    client: redis.Redis
    _script: Callable[..., tuple[list[Any], Any]]

    def register_capacity(
        self,
        queue: str,
        worker: str,
        capacity: Capacity,
        slots: int,
        pools: Sequence[str],
        host: str,
        strict: bool,
        ttl: float,
    ) -> None:
        """The worker's capacity record, renewed by each heartbeat (``ttl`` 0: withdrawn)."""
        args = [
            worker,
            repr(float(ttl)),
            capacity.as_json(slots),
            json.dumps(list(capacity.gpu_ids)),
            json.dumps(list(pools)),
            host,
            "1" if strict else "0",
        ]
        self._script("capacity", queue, args)

    def resource_use(self, queue: str) -> list[WorkerUse]:
        """Live resource workers of ``queue``: capacity, and what their running jobs hold."""
        now = time.time()  # scores are server times; a skew of seconds is within the ttl
        live = self.client.zrangebyscore(keys.queue_key(queue, Key.CAPACITY), now, "+inf")
        out: list[WorkerUse] = []
        for name in map(str, live):
            raw = {
                str(k): str(v)
                for k, v in self.client.hgetall(keys.prefix(queue) + Key.CAP + name).items()
            }
            if not raw:
                continue
            w = WorkerUse(
                name,
                raw.get("host", name),
                json.loads(raw.get("pools", "[]")),
                json.loads(raw["cap"]),
                json.loads(raw.get("gpus", "[]")),
            )
            w.free = dict(w.cap)
            used: set[str] = set()
            held = self.client.smembers(keys.prefix(queue) + Key.HELD + name)
            pipe = self.client.pipeline(transaction=False)
            for job_id in map(str, held):
                pipe.hmget(keys.job(queue, job_id), [Field.STATUS, Field.WORKER, Field.ALLOC])
            for status, owner, alloc in pipe.execute():
                if status == Status.RUNNING and owner == name and alloc:
                    a = json.loads(alloc)
                    for r, v in a["need"].items():
                        w.free[r] = w.free.get(r, 0) - v
                    used.update(a.get("gpu_ids") or [])
            w.free_ids = [g for g in w.gpu_ids if g not in used]
            out.append(w)
        return out

    def explain_head(self, queue: str, pools: Sequence[str] | None = None) -> list[str]:
        """Why the line of ``queue`` waits, one sentence per blocked pool: the first ready
        job that fits no live resource worker's free capacity. Empty when nothing waits
        for resources (or no worker declared capacity)."""
        workers = self.resource_use(queue)
        if not workers:
            return []
        pools = list(pools or sorted({p for w in workers for p in w.pools}))
        out: list[str] = []
        for pool in pools:
            serving = [w for w in workers if pool in w.pools]
            ids = [
                str(i) for i in self.client.zrange(keys.ready(queue, pool), 0, keys.RES_SCAN - 1)
            ]
            if not serving or not ids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(keys.job(queue, job_id), Field.RESOURCES)
            for job_id, text in zip(ids, pipe.execute(), strict=True):
                need = _need(text)
                if any(fits(need, w.free) for w in serving):
                    continue
                out.append(f"{queue}: {explain(need, serving)} (job {job_id}, pool {pool})")
                break
        return out


def explain(need: dict[str, float], workers: Sequence[WorkerUse]) -> str:
    """``head needs gpu=4, largest free: gpu=2 on host-b`` (or, when no live worker could
    ever hold it, ``... more than any live worker has: largest gpu=2 on host-b``); the
    worker is named (its default name starts with its host's)."""
    names = [r for r in sorted(need) if r != SLOTS and need[r] > 0]
    if not any(fits(need, w.cap) for w in workers):
        short = [r for r in names if all(w.cap.get(r, 0) + 1e-9 < need[r] for w in workers)]
        lacking = short or names

        def has(w: WorkerUse) -> float:
            return sum(min(w.cap.get(r, 0) / need[r], 1) for r in lacking)

        best = max(workers, key=has)
        return (
            f"head needs {_fmt(need, names)}, more than any live worker has: "
            f"largest {_fmt(best.cap, lacking)} on {best.name}"
        )
    lacking = [
        r for r in need if need[r] > 0 and all(w.free.get(r, 0) + 1e-9 < need[r] for w in workers)
    ]
    lacking = sorted(lacking) or [r for r in sorted(need) if need[r] > 0]
    if SLOTS in lacking and SLOTS not in names:
        names.append(SLOTS)

    def free_share(w: WorkerUse) -> float:
        return sum(min(max(w.free.get(r, 0), 0) / need[r], 1) for r in lacking)

    best = max(workers, key=free_share)
    return (
        f"head needs {_fmt(need, names)}, largest free: {_fmt(best.free, lacking)} on {best.name}"
    )


def _fmt(amounts: dict[str, float], names: Sequence[str]) -> str:
    return " ".join(f"{r}={max(amounts.get(r, 0), 0):g}" for r in names)


def describe_use(w: WorkerUse) -> str:
    """``gpu 2/4 (free 2,3) · cpu 3/16 · slots 3/20``: use / capacity per resource."""
    parts = []
    for r in sorted(w.cap, key=lambda r: (r != GPU, r == SLOTS, r)):
        if w.cap[r] <= 0 and r != GPU:
            continue
        text = f"{r} {w.used(r):g}/{w.cap[r]:g}"
        if r == GPU and w.gpu_ids:
            text += f" (free {','.join(w.free_ids) or '-'})"
        parts.append(text)
    return " · ".join(parts)
