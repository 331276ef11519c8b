"""Prometheus text exposition of queue counts and workers (no client library needed)."""

from __future__ import annotations

from typing import Any

from .broker import Broker
from .queue import STATUSES


def snapshot(broker: Broker) -> dict[str, Any]:
    """What the dashboard and /metrics show: counts per queue and the live workers."""
    queues = {name: broker.counts(name) for name in broker.queues()}
    return {"queues": queues, "workers": broker.live_workers()}


def render(snap: dict[str, Any]) -> str:
    lines = [
        "# HELP fifoflow_jobs Jobs per queue and status.",
        "# TYPE fifoflow_jobs gauge",
    ]
    for name, counts in snap["queues"].items():
        for status in STATUSES:
            lines.append(f'fifoflow_jobs{{queue="{name}",status="{status}"}} {counts[status]}')
    lines += [
        "# HELP fifoflow_workers Live workers.",
        "# TYPE fifoflow_workers gauge",
        f"fifoflow_workers {len(snap['workers'])}",
        "# HELP fifoflow_worker_slots_busy Running jobs per worker.",
        "# TYPE fifoflow_worker_slots_busy gauge",
    ]
    for w in snap["workers"]:
        lines.append(f'fifoflow_worker_slots_busy{{worker="{w["name"]}"}} {len(w["running"])}')
    lines += [
        "# HELP fifoflow_worker_slots Slots per worker.",
        "# TYPE fifoflow_worker_slots gauge",
    ]
    for w in snap["workers"]:
        lines.append(f'fifoflow_worker_slots{{worker="{w["name"]}"}} {w["concurrency"]}')
    return "\n".join(lines) + "\n"
