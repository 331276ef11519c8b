"""A thousand slots against one server: idle cost, push→start latency, throughput, and how
claiming grows with the number of pools and queues a worker serves.

Run by hand (not a test, not in CI)::

    .venv/bin/python bench/thousand_slots.py [--workers 20] [--slots 50]

Starts its own embedded Valkey (append-only, as in production) in a temporary home and
``--workers`` real worker processes (``fifoflow worker bench_targets -c SLOTS``) against it,
then measures:

1. **idle**: the server process's CPU (utime + stime from ``/proc/PID/stat``) over
   ``--idle-seconds`` while every slot is idle, and the commands it served meanwhile
   (heartbeats, registry, the dispatchers' safety-net wake-ups): no polling means near zero;
2. **push→start**: ``--pings`` single pushes, one at a time with every slot idle; each job
   reports the moment it started (``bench_targets:latency``); also the wake-ups (BLPOP
   replies) and script calls per job, which show whether a push wakes one worker or a herd;
3. **throughput**: ``--jobs`` no-op jobs pushed at once, drained by all the slots;
4. **claim cost vs pools and queues**: one worker serving 1, 10 and 100 pools (of one
   queue) or queues, every job in the *last* one (the worst case), ``--cost-jobs`` jobs
   each: jobs/s and server CPU µs per job.

Everything is stopped by pid and the home removed at the end. The machine it runs on
matters: note its cores and its other load next to the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fifoflow
from fifoflow import Queue, keys, server
from fifoflow.keys import Key

BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
DONE_KEY = "bench:done"  # bench_targets.latency reports start times here


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Fleet:
    """Worker processes of one measurement, stopped by pid."""

    def __init__(self, url: str, home: Path) -> None:
        src = Path(fifoflow.__file__).resolve().parents[1]
        path = [str(src), str(BENCH / "peers"), os.environ.get("PYTHONPATH", "")]
        self.env = {
            **os.environ,
            "FIFOFLOW_URL": url,
            "FIFOFLOW_HOME": str(home),
            "BENCH_URL": url,
            "PYTHONPATH": os.pathsep.join(path),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, *args: str) -> None:
        cmd = [sys.executable, "-m", "fifoflow", "worker", "bench_targets", "--log-level"]
        for _ in range(n):
            self.procs.append(
                subprocess.Popen(
                    [*cmd, "WARNING", *args],
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()


def wait_ready(q: Queue, workers: int, timeout: float = 300.0) -> float:
    """Until ``workers`` workers are registered and each dispatcher is blocked (idle)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        live = len(q.broker.live_workers())
        blocked = sum(1 for c in q.client.client_list() if c.get("cmd") == "blpop")
        if live >= workers and blocked >= workers:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit(f"workers not ready in {timeout:.0f} s")


def succeeded(q: Queue) -> int:
    return int(q.client.zcard(keys.queue_key(q.name, Key.SUCCEEDED)))


def commandstats(q: Queue) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in q.client.info("commandstats").items()}


def idle(q: Queue, pid: int, seconds: float) -> str:
    c0, n0 = cpu_seconds(pid), int(q.client.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    c1, n1 = cpu_seconds(pid), int(q.client.info("stats")["total_commands_processed"])
    return (
        f"server CPU {100 * (c1 - c0) / seconds:.2f} % of one core over {seconds:.0f} s idle; "
        f"{(n1 - n0 - 2) / seconds:.1f} commands/s (heartbeats, registry, safety-net wake-ups)"
    )


def pings(q: Queue, n: int, gap: float) -> str:
    lat: list[float] = []
    before = commandstats(q)
    for i in range(n):
        t = time.time()
        q.push("bench_targets:latency", {"i": i})
        reply = q.client.blpop([DONE_KEY], timeout=30)
        if reply is None:
            raise SystemExit("a ping never started")
        lat.append(float(reply[1].split()[1]) - t)
        time.sleep(gap)  # every slot idle again before the next push
    after = commandstats(q)
    per = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in ("cmdstat_blpop", "cmdstat_fcall")}
    lat.sort()
    return (
        f"push→start over {n} single pushes: p50 {1000 * lat[n // 2]:.2f} ms, "
        f"p99 {1000 * lat[int(n * 0.99)]:.2f} ms, max {1000 * lat[-1]:.2f} ms; "
        f"per job {per['cmdstat_blpop']:.2f} BLPOP wake-ups, "
        f"{per['cmdstat_fcall']:.2f} script calls (push, claim, report)"
    )


def drain(q: Queue, pid: int, n: int, target: str = "bench_targets:noop") -> tuple[float, float]:
    """Push ``n`` jobs at once; returns (jobs/s until all succeeded, server CPU µs/job)."""
    done0 = succeeded(q)
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    for start in range(0, n, 50_000):
        q.push_many(target, [{"i": i} for i in range(start, min(n, start + 50_000))])
    while succeeded(q) - done0 < n:
        time.sleep(0.05)
    dt = time.perf_counter() - t0
    return n / dt, 1e6 * (cpu_seconds(pid) - c0) / n


def claim_cost(url: str, home: Path, pid: int, jobs: int, slots: int) -> list[str]:
    rows = []
    for kind in ("pools", "queues"):
        for k in (1, 10, 100):
            names = [f"{kind[0]}{i:03d}" for i in range(k)]
            fleet = Fleet(url, home)
            if kind == "pools":
                q = Queue("cost", url=url)
                fleet.start(
                    1, "-q", q.name, "-c", str(slots), *[a for p in names for a in ("--pool", p)]
                )
            else:
                q = Queue(names[-1], url=url)
                fleet.start(1, "-c", str(slots), *[a for n in names for a in ("-q", n)])
            try:
                wait_ready(q, 1)
                rate, us = drain_last(q, pid, jobs, names[-1] if kind == "pools" else "default")
                rows.append(f"| {kind} | {k} | {rate:,.0f} | {us:.0f} |")
            finally:
                fleet.stop()
                q.client.flushall()
                q.close()
    return rows


def drain_last(q: Queue, pid: int, n: int, pool: str) -> tuple[float, float]:
    done0 = succeeded(q)
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    q.push_many("bench_targets:noop", [{"i": i} for i in range(n)], pool=pool)
    while succeeded(q) - done0 < n:
        time.sleep(0.02)
    return n / (time.perf_counter() - t0), 1e6 * (cpu_seconds(pid) - c0) / n


def fleet_figures(args: argparse.Namespace, fleet: Fleet, url: str, pid: int) -> None:
    """Idle cost, push→start and throughput of ``--workers`` x ``--slots``."""
    q = Queue("slots", url=url)
    fleet.start(args.workers, "-q", q.name, "-c", str(args.slots))
    took = wait_ready(q, args.workers)
    total = args.workers * args.slots
    print(f"{args.workers} workers x {args.slots} slots = {total} slots idle after {took:.1f} s")
    time.sleep(2.0)
    print(idle(q, pid, args.idle_seconds))
    print(pings(q, args.pings, args.gap))
    rates, cpus = [], []
    usec0 = {k: int(v["usec"]) for k, v in q.client.info("commandstats").items()}
    for _ in range(args.runs):
        rate, us = drain(q, pid, args.jobs)
        rates.append(rate)
        cpus.append(us)
    print(
        f"throughput, {args.jobs:,} no-op jobs pushed at once onto {total} slots: "
        f"{statistics.median(rates):,.0f} jobs/s (median of {args.runs}: "
        f"{', '.join(f'{r:,.0f}' for r in rates)}), server CPU "
        f"{statistics.median(cpus):.0f} µs/job; load {os.getloadavg()[0]:.2f}"
    )
    usec = {k: int(v["usec"]) - usec0.get(k, 0) for k, v in q.client.info("commandstats").items()}
    top = sorted(usec.items(), key=lambda kv: -kv[1])[:6]
    spent = sum(usec.values()) or 1
    print(
        "  server time by command: " + ", ".join(f"{k[8:]} {100 * v / spent:.0f} %" for k, v in top)
    )
    q.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--slots", type=int, default=50, help="thread slots per worker")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between pings")
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs of the throughput run")
    ap.add_argument("--runs", type=int, default=3, help="throughput runs (median)")
    ap.add_argument("--cost-jobs", type=int, default=3_000)
    ap.add_argument("--cost-slots", type=int, default=4)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--only-cost", action="store_true")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ffslots-", dir="/tmp"))
    fleet = None
    try:
        url = server.ensure_running(home)
        pid = server.read_pid(server.Paths(home))
        assert pid is not None
        print(f"server: pid {pid}, {url}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        if not args.only_cost:
            fleet = Fleet(url, home)
            fleet_figures(args, fleet, url, pid)
            fleet.stop()
        if not args.skip_cost:
            print(
                f"claim cost: one worker, {args.cost_slots} slots, "
                f"{args.cost_jobs:,} jobs in the last pool or queue it serves"
            )
            print("| serves | how many | jobs/s | server CPU µs/job |\n|---|---|---|---|")
            for row in claim_cost(url, home, pid, args.cost_jobs, args.cost_slots):
                print(row, flush=True)
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
