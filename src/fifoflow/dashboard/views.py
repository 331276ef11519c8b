"""What each page shows, as plain data (the templates render it, the JSON API returns it).

Every read is bounded by what the page shows (queues, pools, workers, the page size, the
timeline's count), never by the number of jobs in a queue.
"""

from __future__ import annotations

import time
from typing import Any

from .. import keys, metrics
from ..broker import Broker
from ..errors import JobNotFound
from ..keys import RUN_BUCKETS, WAIT_BUCKETS, Event, Status
from .rates import Sampler, chart

#: Outcomes of a timeline bar (the events stream's, and ``running``), in legend order.
OUTCOMES = ("succeeded", "retry", "dead", "lost", "stale", "running")
#: The throughput chart: 60 buckets of the sampler's window.
CHART_BUCKETS = 60
#: Seconds between the timeline's ticks: the first that makes 6 intervals at most.
TICK_STEPS = (5, 10, 15, 30, 60, 120, 300, 600)


def _quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (None: no observation)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, n in zip([*bounds, float("inf")], counts, strict=True):
        seen += n
        if seen >= q * total:
            return bound
    return None  # pragma: no cover - the loop always reaches the total


def _histogram(bounds: tuple[float, ...], entry: list[Any] | None) -> dict[str, Any]:
    if not entry:
        return {"count": 0, "mean": None, "p95": None}
    counts, total = entry
    n = sum(counts)
    return {"count": n, "mean": total / n if n else None, "p95": _quantile(bounds, counts, 0.95)}


def overview(broker: Broker, sampler: Sampler, now: float | None = None) -> dict[str, Any]:
    """Per queue: counts, oldest waiting job, rates and the throughput chart; per pool:
    ready jobs, slots serving it, counters, rates, wait and run times; the live workers."""
    snap = metrics.snapshot(broker)
    now = snap["time"] if now is None else now
    workers = snap["workers"]
    activity = broker.activity(workers)  # running and done from the server, not heartbeats
    queues = []
    for name, q in sorted(snap["queues"].items()):
        sampler.add(name, q["metrics"], now)
        counters = q["metrics"]["counters"]
        pools = sorted({p for by_pool in counters.values() for p in by_pool} | set(q["pools"]))
        ready = broker.ready_counts(name, pools)
        rows = []
        for pool in pools:
            served = sum(
                int(w["concurrency"])
                for w in workers
                if name in w.get("queues", []) and pool in w.get("pools", [])
            )
            rows.append(
                {
                    "pool": pool,
                    "ready": ready.get(pool, 0),
                    "slots": served,
                    "counters": {e.value: counters.get(e, {}).get(pool, 0) for e in Event},
                    "done_1m": sampler.rate(name, ["succeeded", "dead"], 60, pool, now),
                    "done_5m": sampler.rate(name, ["succeeded", "dead"], 300, pool, now),
                    "failed_5m": sampler.rate(name, ["failed"], 300, pool, now),
                    "wait": _histogram(WAIT_BUCKETS, q["metrics"]["wait"].get(pool)),
                    "run": _histogram(RUN_BUCKETS, q["metrics"]["run"].get(pool)),
                }
            )
        bucket = sampler.window / CHART_BUCKETS
        queues.append(
            {
                "name": name,
                "counts": q["counts"],
                "oldest_age": now - q["oldest_queued"] if q["oldest_queued"] else None,
                "sampled": sampler.span(name),
                "pushed_1m": sampler.rate(name, ["pushed"], 60, None, now),
                "done_1m": sampler.rate(name, ["succeeded", "dead"], 60, None, now),
                "done_5m": sampler.rate(name, ["succeeded", "dead"], 300, None, now),
                "pools": rows,
                "chart": chart(sampler.series(name, bucket, sampler.window, now)),
            }
        )
    return {
        "time": now,
        "queues": queues,
        "workers": [_worker(w, now, activity) for w in workers],
        "chart_minutes": sampler.window / 60,
    }


def _worker(
    w: dict[str, Any], now: float, activity: dict[str, tuple[list[str], int]]
) -> dict[str, Any]:
    running, done = activity.get(str(w["name"]), (w.get("running", []), w.get("processed", 0)))
    return {
        "name": w["name"],
        "host": w.get("host", ""),
        "pid": w.get("pid"),
        "queues": w.get("queues", []),
        "pools": w.get("pools", []),
        "concurrency": w.get("concurrency", 0),
        "busy": len(running),
        "processed": done,
        "heartbeat_age": now - float(w.get("heartbeat") or now),
        "healthy": metrics.is_healthy(w, now),
    }


def timeline(
    broker: Broker, queue: str, minutes: float, count: int = 2000, now: float | None = None
) -> dict[str, Any]:
    """The Gantt chart of the last ``minutes``: one row per worker slot, one bar per
    attempt (finished ones from the capped events stream, running ones from the live
    workers' slots), positioned in percent of the window; gaps between bars are idle."""
    now = time.time() if now is None else now
    since = now - minutes * 60
    span = now - since
    events = broker.timeline(queue, count=count, since=since)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    suffix = keys.id_suffix(queue)
    running: list[tuple[str, str, str, float]] = []
    for w in broker.live_workers():
        if queue not in w.get("queues", []):
            continue
        for i in range(int(w.get("concurrency", 0))):
            rows.setdefault((w["name"], str(i)), [])
        for i, entry in enumerate(w.get("slots") or []):
            if entry and str(entry[0]).endswith(suffix):
                running.append((w["name"], str(i), str(entry[0]), float(entry[1])))
    targets = {r["id"]: r for r in broker.records(queue, [r[2] for r in running])}
    for e in events:
        start = e["started"] if e["started"] is not None else e["finished"]
        bar = _bar(e["id"], e.get("target", ""), e["outcome"], start, e["finished"], since, span)
        rows.setdefault((e.get("worker") or "?", e.get("slot") or "?"), []).append(bar)
    for worker, slot, job_id, started in running:
        record = targets.get(job_id)
        if record is None or record["status"] != Status.RUNNING:
            continue  # finished since the heartbeat: its bar comes from the stream
        bar = _bar(job_id, record["target"], "running", started, now, since, span)
        rows.setdefault((worker, slot), []).append(bar)
    out_rows = []
    for (worker, slot), bars in sorted(rows.items(), key=lambda kv: (kv[0][0], _slot_key(kv[0]))):
        bars.sort(key=lambda b: b["start"])
        busy = sum(b["end"] - max(b["start"], since) for b in bars)
        out_rows.append(
            {"worker": worker, "slot": slot, "bars": bars, "busy": min(busy / span, 1.0)}
        )
    step = next((s for s in TICK_STEPS if span / s <= 6), TICK_STEPS[-1])
    ticks = [
        {"left": k * step / span * 100, "label": _ago(span - k * step)}
        for k in range(int(span // step) + 1)
    ]
    return {
        "queue": queue,
        "minutes": minutes,
        "since": since,
        "time": now,
        "rows": out_rows,
        "ticks": ticks,
        "attempts": len(events),
        "truncated": len(events) >= count,
        "outcomes": OUTCOMES,
    }


def _ago(seconds: float) -> str:
    s = round(seconds)
    if s <= 0:
        return "now"
    if s < 60:
        return f"-{s}s"
    return f"-{s // 60}m" + (f"{s % 60:02d}s" if s % 60 else "")


def _slot_key(row: tuple[str, str]) -> tuple[int, str]:
    slot = row[1]
    return (int(slot), "") if slot.isdigit() else (1 << 30, slot)


def _bar(
    job_id: str, target: str, outcome: str, start: float, end: float, since: float, span: float
) -> dict[str, Any]:
    left = max(start, since)
    return {
        "id": job_id,
        "target": target,
        "outcome": outcome,
        "start": start,
        "end": end,
        "seconds": end - start,
        "left": (left - since) / span * 100,
        "width": max((end - left) / span * 100, 0.0),
    }


def jobs(
    broker: Broker,
    queue: str,
    *,
    status: str | None,
    pool: str | None,
    target: str | None,
    oldest_first: bool,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of jobs (newest first, or in run order) and the cursor of the next. A
    filter the listing cannot apply scans at most 4 windows of the page size."""
    filtered = bool(target) or (pool is not None and status != Status.QUEUED)
    records, next_cursor = broker.page(
        queue,
        status,
        pool=pool,
        target=target,
        limit=limit,
        cursor=cursor,
        newest_first=not oldest_first,
        rounds=4 if filtered else 1,
    )
    return {
        "queue": queue,
        "jobs": records,
        "next": next_cursor,
        "counts": broker.counts(queue),
        "pools": broker.pools(queue),
    }


def job(broker: Broker, queue: str, job_id: str) -> dict[str, Any]:
    """Everything about one job: its record, traceback and every attempt the events
    stream still holds (plus the running one)."""
    record = broker.record(queue, job_id)
    if record is None:
        raise JobNotFound(job_id)
    running = record["status"] == Status.RUNNING
    finished = record["status"] in keys.FINAL
    attempts = broker.attempts(
        queue,
        job_id,
        since=record["created_at"] or 0.0,
        until=record["finished_at"] if finished else None,
        want=max(record["attempts"] - (1 if running else 0), 1),
    )
    if running:
        attempts.append(
            {
                "outcome": "running",
                "worker": record["worker"],
                "slot": None,
                "started": record["started_at"],
                "finished": None,
            }
        )
    return {
        "queue": queue,
        "job": record,
        "traceback": broker.traceback(queue, job_id),
        "attempts": attempts,
    }
