"""Prometheus metrics: a ``prometheus_client`` collector over what the server keeps.

The counters and histograms are kept by the scripts themselves, in the same call as the
state change they count, so every process (any dashboard, any worker's metrics port) reads
the same numbers, and they never fall when finished records expire: ``rate()`` works.
Gauges (jobs per status, the oldest queued job's age, workers and slots) are read at each
scrape; every read is bounded by the number of queues, pools and workers, not of jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .broker import Broker
from .keys import RUN_BUCKETS, WAIT_BUCKETS, Event
from .queue import STATUSES

#: Content type of the exposition text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Outcomes of ``fifoflow_jobs_total``: the counters other than pushes.
OUTCOMES = tuple(e.value for e in Event if e != Event.PUSHED)


def snapshot(broker: Broker, queues: Sequence[str] | None = None) -> dict[str, Any]:
    """What the dashboard, /metrics and the alerts show: per queue its counts (and queued
    jobs per pool), counters, histograms and oldest queued push time; the live workers."""
    out: dict[str, Any] = {"queues": {}, "workers": broker.live_workers(), "time": time.time()}
    for name in queues if queues is not None else broker.queues():
        pools = broker.pools(name)
        out["queues"][name] = {
            "counts": broker.counts(name),
            "queued_by_pool": broker.queued_by_pool(name, pools),
            "metrics": broker.metrics(name),
            "pools": pools,
            "oldest_queued": broker.oldest_queued(name, pools),
        }
    return out


def _cumulative(
    bounds: Sequence[float], data: dict[str, Any]
) -> Iterable[tuple[str, list[tuple[str, float]], float]]:
    """Per pool: Prometheus' cumulative buckets from per-bucket counts, and the sum."""
    for pool, (counts, total) in sorted(data.items()):
        cumulative, running = [], 0
        for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        yield pool, cumulative, total


class FifoflowCollector(Collector):
    """Every fifoflow metric of the server behind ``broker`` (or of some queues of it)."""

    def __init__(self, broker: Broker, queues: Sequence[str] | None = None) -> None:
        self.broker = broker
        self.queues = list(queues) if queues is not None else None

    def collect(self) -> Iterator[Metric]:
        snap = snapshot(self.broker, self.queues)
        yield from self.queue_metrics(snap)
        known = [(q, p) for q, data in snap["queues"].items() for p in data["pools"]]
        yield from self.worker_metrics(snap["workers"], known)

    def describe(self) -> Iterator[Metric]:  # no scrape at registration
        return iter(())

    @staticmethod
    def queue_metrics(snap: dict[str, Any]) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "fifoflow_queue_jobs", "Jobs per queue and status, now.", labels=["queue", "status"]
        )
        total = CounterMetricFamily(
            "fifoflow_jobs",
            "Jobs (or attempts, for failed) by outcome, per queue and pool, since the queue began.",
            labels=["queue", "pool", "outcome"],
        )
        pushed = CounterMetricFamily(
            "fifoflow_jobs_pushed", "Jobs pushed, per queue and pool.", labels=["queue", "pool"]
        )
        started = CounterMetricFamily(
            "fifoflow_jobs_started",
            "Attempts started (claimed), per queue and pool.",
            labels=["queue", "pool"],
        )
        wait = HistogramMetricFamily(
            "fifoflow_queue_wait_seconds",
            "Seconds from ready (pushed, due, or back in line) to start, per attempt.",
            labels=["queue", "pool"],
        )
        run = HistogramMetricFamily(
            "fifoflow_run_seconds",
            "Seconds an attempt ran, to its report (lost leases not included).",
            labels=["queue", "pool"],
        )
        pool_queued = GaugeMetricFamily(
            "fifoflow_pool_queued_jobs",
            "Jobs waiting in line per queue and pool, now.",
            labels=["queue", "pool"],
        )
        oldest = GaugeMetricFamily(
            "fifoflow_oldest_queued_age_seconds",
            "Age (since its push) of the oldest job waiting in line, 0 when none waits.",
            labels=["queue"],
        )
        for queue, q in sorted(snap["queues"].items()):
            for status in STATUSES:
                jobs.add_metric([queue, status], q["counts"][status])
            for pool, n in sorted(q.get("queued_by_pool", {}).items()):
                pool_queued.add_metric([queue, pool], n)
            m = q["metrics"]
            c = m["counters"]
            pools = sorted({p for by_pool in c.values() for p in by_pool} | set(q["pools"]))
            for pool in pools:
                pushed.add_metric([queue, pool], c.get(Event.PUSHED, {}).get(pool, 0))
                for outcome in OUTCOMES:
                    total.add_metric([queue, pool, outcome], c.get(outcome, {}).get(pool, 0))
            for pool, buckets, s in _cumulative(WAIT_BUCKETS, m["wait"]):
                wait.add_metric([queue, pool], buckets, s)
                started.add_metric([queue, pool], buckets[-1][1])
            for pool, buckets, s in _cumulative(RUN_BUCKETS, m["run"]):
                run.add_metric([queue, pool], buckets, s)
            age = snap["time"] - q["oldest_queued"] if q["oldest_queued"] else 0.0
            oldest.add_metric([queue], max(age, 0.0))
        yield from (jobs, pool_queued, total, pushed, started, wait, run, oldest)

    @staticmethod
    def worker_metrics(
        workers: list[dict[str, Any]], known: Iterable[tuple[str, str]] = ()
    ) -> Iterator[Metric]:
        """Worker gauges; ``known`` (queue, pool) pairs nobody serves get 0 pool slots."""
        live = GaugeMetricFamily("fifoflow_workers", "Live workers.")
        live.add_metric([], len(workers))
        slots = GaugeMetricFamily(
            "fifoflow_worker_slots", "Slots per worker.", labels=["worker", "host"]
        )
        busy = GaugeMetricFamily(
            "fifoflow_worker_slots_busy", "Running jobs per worker.", labels=["worker", "host"]
        )
        pools = GaugeMetricFamily(
            "fifoflow_pool_slots",
            "Slots of live workers serving each queue and pool (0: nobody runs its jobs).",
            labels=["queue", "pool"],
        )
        healthy = GaugeMetricFamily(
            "fifoflow_worker_healthy",
            "1 when the worker met no server error in the last minute and lost no thread.",
            labels=["worker", "host"],
        )
        served: dict[tuple[str, str], int] = dict.fromkeys(known, 0)
        now = time.time()
        for w in workers:
            labels = [str(w["name"]), str(w.get("host", ""))]
            slots.add_metric(labels, w["concurrency"])
            busy.add_metric(labels, len(w.get("running", [])))
            healthy.add_metric(labels, 1.0 if is_healthy(w, now) else 0.0)
            for q in w.get("queues", []):
                for p in w.get("pools", []):
                    served[(q, p)] = served.get((q, p), 0) + int(w["concurrency"])
        for (q, p), n in sorted(served.items()):
            pools.add_metric([q, p], n)
        yield from (live, slots, busy, pools, healthy)


def is_healthy(worker: dict[str, Any], now: float, window: float = 60.0) -> bool:
    """No thread died, and no server error in the last ``window`` seconds."""
    h = worker.get("health") or {}
    if h.get("dead_threads"):
        return False
    last = h.get("last_error_at")
    return not (last and now - float(last) < window)


def render(broker: Broker, queues: Sequence[str] | None = None) -> bytes:
    """The exposition text of every metric, for an HTTP handler."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FifoflowCollector(broker, queues))
    return generate_latest(registry)
