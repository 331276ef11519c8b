"""Micro-benchmark: does claiming get slower as the queue gets deeper?

Run by hand (not a test, not in CI)::

    .venv/bin/python bench/claim_depth.py [--deep 1000000] [--seconds 3]

Starts its own embedded Valkey in a temporary home under /tmp (append-only, as in
production), queues ``--shallow`` jobs and measures claim+ack round trips per second: each
round trip is one ``complete.lua`` call that acks the job in hand and claims the next, the
path a busy worker slot takes. Then it bulk-loads the queue to ``--deep`` queued jobs with
``push_many`` and measures again. Both phases keep the depth steady by topping the queue
up between timed stretches (top-ups are not timed). Prints both rates, their ratio and the
server memory per queued job (INFO used_memory delta over the bulk load / jobs loaded).
The server is stopped and its home removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fifoflow import Queue, server
from fifoflow.records import Claimed, ClaimRequest, Outcome, nonce

TARGET = "bench.noop:run"
WORKER = "bench-worker"
POOLS = ["default"]
LEASE = 30.0
REFILL = 500  # top up after this many acks, so the depth stays within REFILL of its mark


OK = Outcome("ok", "null")


def request() -> ClaimRequest:
    """One claim of one job, as a worker slot asks (a fresh nonce: its fencing token)."""
    return ClaimRequest(WORKER, 1, POOLS, LEASE, nonce())


def ready(q: Queue) -> int:
    return sum(q.broker.ready_counts(q.name, POOLS).values())


def used_memory(q: Queue) -> int:
    return int(q.client.info("memory")["used_memory"])


def server_cpu(q: Queue) -> float:
    """CPU seconds the server's process has used (all its threads; not a rewrite child):
    steadier than wall time on a shared machine."""
    pid = int(q.client.info("server")["process_id"])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push_jobs(q: Queue, count: int, chunk: int, start: int = 0, progress: bool = False) -> float:
    """Push ``count`` jobs in ``push_many`` calls of ``chunk``; returns the seconds taken."""
    t0 = time.perf_counter()
    done = 0
    while done < count:
        n = min(chunk, count - done)
        q.push_many(TARGET, [{"i": start + done + k} for k in range(n)])
        done += n
        if progress:
            rate = done / (time.perf_counter() - t0)
            print(f"\r  loaded {done:,}/{count:,} ({rate:,.0f} jobs/s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return time.perf_counter() - t0


class Stretch:
    """Timed claim+ack round trips on one queue, topped up between batches (untimed)."""

    def __init__(self, q: Queue) -> None:
        self.q = q
        self.latencies: list[float] = []
        self.rates: list[float] = []
        self._pushed = 10**9  # params counter for top-ups, far from the initial ones

    def run(self, seconds: float) -> float:
        q = self.q
        claimed = q.broker.claim(q.name, request()).jobs
        if not claimed:
            raise SystemExit(f"{q.name}: nothing to claim")
        job: Claimed = claimed[0]
        trips, timed = 0, 0.0
        while timed < seconds:
            t0 = time.perf_counter()
            for _ in range(REFILL):
                t = time.perf_counter()
                done = q.broker.complete(job, OK, request())
                self.latencies.append(time.perf_counter() - t)
                if done.outcome != "succeeded" or not done.claimed:
                    raise SystemExit(f"{q.name}: unexpected completion {done.outcome!r}")
                job = done.claimed[0]
            timed += time.perf_counter() - t0
            trips += REFILL
            q.push_many(TARGET, [{"i": self._pushed + k} for k in range(REFILL)])
            self._pushed += REFILL
        # give the job in hand back, so the depth ends where it started
        q.broker.release(q.name, [job])
        rate = trips / timed
        self.rates.append(rate)
        return rate

    def summary(self) -> str:
        lat = sorted(self.latencies)
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[int(len(lat) * 0.99)] * 1000
        return (
            f"{statistics.median(self.rates):8,.0f} claim+ack round trips/s "
            f"(median of {len(self.rates)} stretches; p50 {p50:.3f} ms, p99 {p99:.3f} ms)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--shallow", type=int, default=1_000, help="queued jobs, first phase")
    ap.add_argument("--deep", type=int, default=1_000_000, help="queued jobs, second phase")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per phase")
    ap.add_argument("--stretches", type=int, default=6, help="timed stretches per phase")
    ap.add_argument("--chunk", type=int, default=50_000, help="jobs per push_many call")
    args = ap.parse_args()
    stretch_s = args.seconds / args.stretches

    home = Path(tempfile.mkdtemp(prefix="ffbench-", dir="/tmp"))
    try:
        url = server.ensure_running(home)
        info = server.status(home) or {}
        print(f"server: Valkey {info.get('version')}, {url}, appendfsync {info.get('appendfsync')}")
        q = Queue("bench", url=url)

        push_jobs(q, args.shallow, args.chunk)
        shallow = Stretch(q)
        shallow.run(0.3)  # warm-up: connection, script cache
        shallow.rates.clear()
        shallow.latencies.clear()
        for _ in range(args.stretches):
            shallow.run(stretch_s)
        print(f"depth {ready(q):>9,}: {shallow.summary()}")

        before, cpu0, own0 = used_memory(q), server_cpu(q), time.process_time()
        to_load = args.deep - ready(q)
        load_s = push_jobs(q, to_load, args.chunk, start=args.shallow, progress=True)
        after, cpu = used_memory(q), server_cpu(q) - cpu0
        own = time.process_time() - own0
        print(
            f"bulk load: {to_load:,} jobs in {load_s:.1f} s ({to_load / load_s:,.0f} jobs/s); "
            f"CPU per job: server {cpu / to_load * 1e6:.1f} us, client {own / to_load * 1e6:.1f} us"
        )

        deep = Stretch(q)
        for _ in range(args.stretches):
            deep.run(stretch_s)
        print(f"depth {ready(q):>9,}: {deep.summary()}")
        shallow_rate = statistics.median(shallow.rates)
        deep_rate = statistics.median(deep.rates)
        print(f"ratio deep/shallow: {deep_rate / shallow_rate:.2f}")

        # A control that the machine's load cannot skew: a shallow queue on the same,
        # now big, server, measured in alternation with the deep one.
        control_q = Queue("bench-control", url=url)
        push_jobs(control_q, args.shallow, args.chunk)
        control, deep2 = Stretch(control_q), Stretch(q)
        for _ in range(args.stretches):
            control.run(stretch_s)
            deep2.run(stretch_s)
        ratio = statistics.median(deep2.rates) / statistics.median(control.rates)
        print(
            f"interleaved on the loaded server: shallow {statistics.median(control.rates):,.0f}/s, "
            f"deep {statistics.median(deep2.rates):,.0f}/s, ratio deep/shallow {ratio:.2f}"
        )
        print(
            f"server memory per queued job: {(after - before) / to_load:,.0f} bytes "
            f"(used_memory {before / 2**20:,.1f} MiB -> {after / 2**20:,.1f} MiB "
            f"for {to_load:,} jobs)"
        )
        control_q.close()
        q.close()
    finally:
        server.stop(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
