"""The benchmark's job bodies, shared by every system (stdlib + redis-py only).

Each call appends ``(start, end)`` wall-clock times (``time.time()``, the machine's one
clock) to ``RECORDS`` in the worker process; the adapter ships them to the driver when the
worker stops. ``latency`` also tells the waiting pusher its start time through a Redis
list, after the start is taken, so that round trip is not part of the figure.

fifoflow runs these as ``bench_targets:noop`` etc.; the other adapters wrap them in their
own task/actor/function declarations.
"""

from __future__ import annotations

import os
import threading
import time

RECORDS: list[tuple[float, float]] = []
_record = RECORDS.append
DONE_KEY = "bench:done"

_client = None
_client_lock = threading.Lock()


def _redis():  # type: ignore[no-untyped-def]
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                import redis

                _client = redis.Redis.from_url(os.environ["BENCH_URL"])
    return _client


def noop(i: int = 0) -> None:
    t = time.time()
    _record((t, time.time()))


def sleep5(i: int = 0) -> None:
    t = time.time()
    time.sleep(0.005)
    _record((t, time.time()))


def latency(i: int = 0) -> None:
    t = time.time()
    _redis().lpush(DONE_KEY, f"{i} {t!r}")
    _record((t, time.time()))


async def sleep5_async(i: int = 0) -> None:
    """The 5 ms job for asyncio systems (saq): sleeps without blocking the event loop."""
    import asyncio

    t = time.time()
    await asyncio.sleep(0.005)
    _record((t, time.time()))


KINDS = {"noop": noop, "sleep5": sleep5, "latency": latency}
