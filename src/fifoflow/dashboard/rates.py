"""Rates over the last minutes, from the server's monotonic counters sampled over time.

The counters (``BrokerReads.metrics``) never fall, so the difference of two samples is
exact whoever else reads them; the dashboard keeps a few minutes of samples in memory
(one read of two small hashes per queue and sample: bounded by pools, not by jobs).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..broker import Broker
from ..keys import Event

log = logging.getLogger(__name__)

#: What the throughput chart stacks, bottom up.
CHART_EVENTS = (Event.SUCCEEDED, Event.FAILED, Event.DEAD)


@dataclass(slots=True, frozen=True)
class Sample:
    t: float
    #: pool -> event -> count; ``started`` is the count of the queue-wait histogram.
    counts: dict[str, dict[str, int]]


def counters_by_pool(m: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``BrokerReads.metrics`` turned around: pool -> event -> count, started included."""
    out: dict[str, dict[str, int]] = {}
    for event, by_pool in m["counters"].items():
        for pool, n in by_pool.items():
            out.setdefault(pool, {})[event] = n
    for pool, (buckets, _) in m["wait"].items():
        out.setdefault(pool, {})["started"] = sum(buckets)
    return out


class Sampler:
    """A window of counter samples per queue, fed by a thread (``start``) and by every
    overview read (``add``); samples closer than half the period are not kept."""

    def __init__(self, broker: Broker, every: float = 2.0, window: float = 600.0) -> None:
        self.broker = broker
        self.every = every
        self.window = window
        self.history: dict[str, deque[Sample]] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, queue: str, metrics: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        sample = Sample(now, counters_by_pool(metrics))
        with self.lock:
            h = self.history.setdefault(queue, deque())
            if h and now - h[-1].t < self.every / 2:
                return
            h.append(sample)
            while h and now - h[0].t > self.window + self.every:
                h.popleft()

    def sample_all(self) -> None:
        for q in self.broker.queues():
            self.add(q, self.broker.metrics(q))

    def start(self) -> None:
        if self.every <= 0 or self.thread is not None:
            return
        self.thread = threading.Thread(target=self._run, name="ffdash-sampler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(5)

    def _run(self) -> None:
        failing = False
        while not self.stop_event.is_set():
            try:
                self.sample_all()
                failing = False
            except redis.RedisError as e:
                if not failing:
                    log.warning("dashboard: sampling the counters failed: %s", e)
                failing = True
            self.stop_event.wait(self.every)

    def samples(self, queue: str) -> list[Sample]:
        with self.lock:
            return list(self.history.get(queue, ()))

    def span(self, queue: str) -> float:
        """Seconds between the first and the last sample kept."""
        samples = self.samples(queue)
        return samples[-1].t - samples[0].t if samples else 0.0

    def rate(
        self,
        queue: str,
        events: Iterable[str],
        window: float,
        pool: str | None = None,
        now: float | None = None,
    ) -> float | None:
        """Per minute over the last ``window`` seconds (or as much of it as was sampled);
        None before two samples."""
        samples = self.samples(queue)
        if len(samples) < 2:
            return None
        now = samples[-1].t if now is None else now
        first = next((s for s in samples if s.t >= now - window), samples[0])
        last = samples[-1]
        if last.t - first.t <= 0:
            return None
        names = list(events)
        delta = _total(last, names, pool) - _total(first, names, pool)
        return max(delta, 0) * 60.0 / (last.t - first.t)

    def series(
        self, queue: str, bucket: float, span: float, now: float
    ) -> list[tuple[float, dict[str, int]]]:
        """Per bucket of ``bucket`` seconds over the last ``span``: how many of each
        ``CHART_EVENTS`` happened (the difference of consecutive samples, put in the bucket
        of the later one)."""
        n = max(1, int(span // bucket))
        start = now - n * bucket
        out = [(start + i * bucket, dict.fromkeys(map(str, CHART_EVENTS), 0)) for i in range(n)]
        samples = self.samples(queue)
        for before, after in itertools.pairwise(samples):
            i = int((after.t - start) // bucket)
            if 0 <= i < n:
                for e in CHART_EVENTS:
                    out[i][1][e] += max(0, _total(after, [e]) - _total(before, [e]))
        return out


def _total(sample: Sample, events: Sequence[str], pool: str | None = None) -> int:
    pools = [pool] if pool is not None else list(sample.counts)
    return sum(sample.counts.get(p, {}).get(e, 0) for p in pools for e in events)


def chart(
    series: list[tuple[float, dict[str, int]]], width: float = 300, height: float = 60
) -> dict[str, Any]:
    """Stacked bars for an SVG of ``width`` x ``height``: per bucket, one rect per event."""
    peak = max((sum(c.values()) for _, c in series), default=0)
    step = width / max(len(series), 1)
    bars: list[dict[str, Any]] = []
    for i, (t, counts) in enumerate(series):
        y = float(height)
        for e in CHART_EVENTS:
            h = counts[e] / peak * (height - 2) if peak else 0.0
            if h > 0:
                y -= h
                w = max(step - 1, 1)
                bars.append({"x": i * step, "y": y, "w": w, "h": h, "event": str(e), "t": t,
                             "n": counts[e]})  # fmt: skip
    return {"width": width, "height": height, "peak": peak, "bars": bars, "buckets": len(series)}
