"""What ``FIFOFLOW_DURABILITY=replicated`` costs: throughput with it over throughput without.

Run by hand (not a test, not in CI)::

    .venv/bin/python bench/replicated.py [--reps 3] [--jobs 2000]

Starts Debian's ``redis-server`` twice on free loopback ports (a primary and its replica,
no persistence, in a temporary folder; stopped by pid at the end) and measures, for
durability ``local`` and ``replicated`` in turn (interleaved, ``--reps`` times, medians):

* single pushes/s: ``Queue.push`` one job per call, the latency-bound case;
* batched pushes, jobs/s: ``push_many`` of 100 jobs per call;
* claim+ack round trips/s: one ``complete`` call that acks the job in hand and claims the
  next, the path of a busy worker slot.

With ``replicated`` each push and each ack is followed, in the same packet, by
``WAIT 1 <timeout>``: the reply comes once the replica has the write. On loopback the
replica is near; across machines add a network round trip per call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from fifoflow import Queue
from fifoflow.records import ClaimRequest, Outcome, nonce
from fifoflow.settings import Settings

TARGET = "bench.noop:run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    folder.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server on {port} did not start")


def single(q: Queue, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        q.push(TARGET, {"i": i})
    return n / (time.perf_counter() - t0)


def batched(q: Queue, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, n * 10, 100):
        q.push_many(TARGET, [{"i": i + k} for k in range(100)])
    return n * 10 / (time.perf_counter() - t0)


def acks(q: Queue, n: int) -> float:
    b = q.broker
    req = ClaimRequest("bench", 1, ["default"], 30.0, nonce())
    job = b.claim(q.name, req).jobs[0]
    t0 = time.perf_counter()
    for _ in range(n):
        req = ClaimRequest("bench", 1, ["default"], 30.0, nonce())
        done = b.complete(job, Outcome("ok", "null"), req)
        job = done.claimed[0]
    rate = n / (time.perf_counter() - t0)
    b.release(q.name, [job])
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2000)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("needs Debian's redis-server")
    root = Path(tempfile.mkdtemp(prefix="ffrep-", dir="/tmp"))
    p0, p1 = free_port(), free_port()
    procs = [start(root / "primary", p0)]
    try:
        procs.append(start(root / "replica", p1, "--replicaof", "127.0.0.1", str(p0)))
        while int(redis.Redis(port=p0).info("replication")["connected_slaves"]) < 1:
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{p0}"
        rates: dict[str, dict[str, list[float]]] = {}
        for rep in range(args.reps):
            for mode in ("local", "replicated"):
                q = Queue(f"rep-{mode}-{rep}", url=url, settings=Settings(durability=mode))
                r = rates.setdefault(mode, {"single": [], "batched": [], "acks": []})
                r["single"].append(single(q, args.jobs))
                r["batched"].append(batched(q, args.jobs))
                r["acks"].append(acks(q, args.jobs))
                q.close()
        load = os.getloadavg()
        print(f"loopback primary + replica; {args.reps} reps of {args.jobs} calls; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} "
              "cores")  # fmt: skip
        print(f"{'':24}{'local':>12}{'replicated':>12}{'ratio':>8}")
        for what, label in (
            ("single", "single pushes/s"),
            ("batched", "batched push jobs/s"),
            ("acks", "claim+ack trips/s"),
        ):
            lo = statistics.median(rates["local"][what])
            re_ = statistics.median(rates["replicated"][what])
            print(f"{label:24}{lo:12,.0f}{re_:12,.0f}{re_ / lo:8.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
