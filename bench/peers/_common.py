"""The adapters' side of the driver protocol (stdlib + redis-py only: every venv has those).

An adapter is run as ``PYTHON bench/peers/NAME_adapter.py CONFIG_JSON`` with its own
system's virtualenv; it writes one JSON document to ``config["out"]`` and exits 0.
Operations (``config["op"]``):

* ``version``  -> ``{"system", "version", "python"}``
* ``enqueue``  -> push ``n`` jobs of ``kind`` (``mode``: ``single`` one call per job,
  ``bulk`` the system's own batch API, ``fill`` whatever is quickest, untimed by the
  driver) -> ``{"n", "seconds"}`` or ``{"unsupported": true}``
* ``work``     -> run one worker process with ``concurrency`` slots until the driver
  raises the stop flag in the shared control file (or, for ``burst`` workers, until the
  queue is drained) -> ``{"records": [[start, end], ...], "cpu_s", "cpu_jobs"}``
* ``latency``  -> push ``n`` jobs one at a time (after ``warmup`` ones), each waited for,
  and return push->start latencies in seconds.

The control file is ``8 * (2 + procs)`` bytes of little-endian int64: word 0 is the stop
flag (set by the driver), word 2 + slot is the count of jobs this worker process finished
(written by its monitor thread every 5 ms), so the driver knows when all ``n`` are done.
"""

from __future__ import annotations

import json
import mmap
import os
import platform
import resource
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import bench_targets

QUEUE = "bench"
POLL = 0.005

Single = Callable[[int, str], object]
Bulk = Callable[[list[int], str], object]


@dataclass
class Pusher:
    single: Single
    bulk: Bulk | None = None  # None: the system has no batch API
    fill: Bulk | None = None  # quickest untimed way to queue many jobs (default: bulk/single)
    close: Callable[[], object] | None = None


@dataclass
class WorkerHandle:
    run: Callable[[], object]  # blocks; returns when a burst worker is drained or after stop
    stop: Callable[[], object] | None = None  # graceful stop from another thread, if any


class Adapter:
    system = ""

    def version(self) -> str:
        raise NotImplementedError

    def pusher(self, cfg: dict) -> Pusher:
        raise NotImplementedError

    def worker(self, cfg: dict) -> WorkerHandle:
        raise NotImplementedError


class Control:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def stopped(self) -> bool:
        return struct.unpack_from("<q", self.mm, 0)[0] != 0

    def set_count(self, slot: int, n: int) -> None:
        struct.pack_into("<q", self.mm, 8 * (2 + slot), n)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write(cfg: dict, doc: dict) -> None:
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, cfg["out"])


def _enqueue(adapter: Adapter, cfg: dict) -> dict:
    p = adapter.pusher(cfg)
    n, kind, mode = int(cfg["n"]), cfg["kind"], cfg["mode"]
    ids = list(range(n))
    t0 = time.perf_counter()
    if mode == "single":
        for i in ids:
            p.single(i, kind)
    elif mode == "bulk":
        if p.bulk is None:
            return {"unsupported": True}
        p.bulk(ids, kind)
    else:  # fill
        if p.fill is not None:
            p.fill(ids, kind)
        elif p.bulk is not None:
            p.bulk(ids, kind)
        else:
            for i in ids:
                p.single(i, kind)
    dt = time.perf_counter() - t0
    if p.close:
        p.close()
    return {"n": n, "seconds": dt, "mode": mode}


def _latency(adapter: Adapter, cfg: dict) -> dict:
    import redis

    p = adapter.pusher(cfg)
    r = redis.Redis.from_url(cfg["url"])
    r.delete(bench_targets.DONE_KEY)
    n, warmup = int(cfg["n"]), int(cfg["warmup"])
    gap, wait_s, cap_s = float(cfg["gap_s"]), float(cfg["wait_s"]), float(cfg["cap_s"])
    lat: list[float] = []
    calls: list[float] = []
    timeouts = 0
    capped = False
    deadline = None
    for i in range(warmup + n):
        if i == warmup:
            deadline = time.monotonic() + cap_s
        time.sleep(gap)
        t0 = time.time()
        p.single(i, "latency")
        t1 = time.time()
        start = None
        # the first job also waits for the worker to come up
        limit = time.monotonic() + (max(wait_s, 30.0) if i == 0 else wait_s)
        while time.monotonic() < limit:
            item = r.brpop(bench_targets.DONE_KEY, timeout=max(0.01, limit - time.monotonic()))
            if item is None:
                break
            j, ts = item[1].decode().split()
            if int(j) == i:
                start = float(ts)
                break
        if start is None:
            timeouts += 1
        elif i >= warmup:
            lat.append(start - t0)
            calls.append(t1 - t0)
        if deadline is not None and time.monotonic() > deadline and i < warmup + n - 1:
            capped = True
            break
    if p.close:
        p.close()
    return {"latencies": lat, "push_calls": calls, "timeouts": timeouts, "capped": capped}


def _work(adapter: Adapter, cfg: dict) -> None:
    os.environ.setdefault("BENCH_URL", cfg["url"])
    ctl = Control(cfg["control"])
    slot = int(cfg["slot"])
    handle = adapter.worker(cfg)
    records = bench_targets.RECORDS
    state: dict = {"cpu0": None, "n0": 0}
    done = threading.Event()
    written = threading.Lock()

    def finish() -> None:
        if not written.acquire(blocking=False):
            return
        n = len(records)
        cpu1 = cpu_seconds()
        ctl.set_count(slot, n)
        cpu0 = state["cpu0"]
        write(
            cfg,
            {
                "records": list(records[:n]),
                "cpu_s": (cpu1 - cpu0) if cpu0 is not None else 0.0,
                "cpu_jobs": n - state["n0"],
            },
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def monitor() -> None:
        while True:
            n = len(records)
            ctl.set_count(slot, n)
            if state["cpu0"] is None and n:
                state["cpu0"], state["n0"] = cpu_seconds(), len(records)
            if ctl.stopped():
                if handle.stop is not None:
                    handle.stop()
                    done.wait(10)
                finish()
            time.sleep(POLL)

    threading.Thread(target=monitor, name="bench-monitor", daemon=True).start()
    try:
        handle.run()
    finally:
        done.set()
    # A burst worker drained the queue: keep the final count published, then report.
    finish()


def main(adapter: Adapter) -> None:
    cfg = json.loads(sys.argv[1])
    op = cfg["op"]
    if op == "version":
        write(
            cfg,
            {
                "system": adapter.system,
                "version": adapter.version(),
                "python": platform.python_version(),
            },
        )
    elif op == "enqueue":
        write(cfg, _enqueue(adapter, cfg))
    elif op == "latency":
        write(cfg, _latency(adapter, cfg))
    elif op == "work":
        _work(adapter, cfg)
    else:
        raise SystemExit(f"unknown op {op!r}")


def chunks(items: Iterable[int], size: int) -> Iterable[list[int]]:
    batch: list[int] = []
    for i in items:
        batch.append(i)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
