"""Benchmark: a mixed GPU sweep under static pools, strict FIFO by resources, and FIFO
with EASY backfill.

Run by hand (not a test, not in CI)::

    .venv/bin/python bench/resources_sweep.py [--jobs 300] [--mean 0.25] [--seed 7]

300 jobs: a quarter need 4 GPUs, half need 1 GPU, the rest are CPU-only; run times are
drawn from a log-normal (sigma 1, mean ``--mean`` seconds, clipped to [0.02, 3]) and each
job declares ``expected_seconds`` = 1.5 x its run time (an overestimate, as timeouts are).
The jobs are pushed in one shuffled line, all before any worker starts; each job sleeps
for its run time and checks its CUDA_VISIBLE_DEVICES. One simulated machine with 8 fake GPU
ids (0-7) and 4 CPUs, three ways:

* static: the seed's carving, a ``gpu`` pool worker with 2 slots (each slot owns 4
  GPUs, so a 1-GPU job idles 3) and a ``cpu`` pool worker with 4 slots;
* strict: one worker ``--gpus 0,...,7 --cpus 4 --processes --strict-fifo``;
* backfill: the same worker without ``--strict-fifo`` (EASY backfilling).

Makespan = first start to last end (from the jobs' own records); mean GPU utilisation =
sum(GPUs x run time) / (8 x makespan). Every worker uses process slots. The embedded
server runs in a temporary home and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fifoflow import Queue, server

ROOT = Path(__file__).resolve().parent.parent
TARGET = "bench.sweep_job:run"
GPUS = 8
CPUS = 4


def draw_jobs(n: int, mean: float, seed: int) -> list[tuple[int, float]]:
    """(GPUs, seconds) per job, in line order."""
    rng = random.Random(seed)
    kinds = [4] * (n // 4) + [1] * (n // 2)
    kinds += [0] * (n - len(kinds))
    rng.shuffle(kinds)
    mu = math.log(mean) - 0.5  # sigma = 1: mean = exp(mu + 1/2)
    return [(g, min(max(rng.lognormvariate(mu, 1.0), 0.02), 3.0)) for g in kinds]


def worker(url: str, queue: str, *args: str) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "FIFOFLOW_URL": url, "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "fifoflow", "worker", "bench.sweep_job", "-q", queue]
    return subprocess.Popen(
        [*cmd, "--processes", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def run_mode(url: str, mode: str, jobs: list[tuple[int, float]], out: Path) -> dict[str, Any]:
    queue = f"sweep-{mode}-{uuid.uuid4().hex[:6]}"
    q = Queue(queue, url=url)
    for gpus, seconds in jobs:
        params = {"seconds": seconds, "gpus": gpus, "out": str(out), "mode": mode}
        if mode == "static":
            q.push(TARGET, params, pool="gpu" if gpus else "cpu")
        else:
            need = {"gpu": gpus} if gpus else {"cpu": 1}
            q.push(TARGET, params, resources=need, expected_seconds=1.5 * seconds)
    if mode == "static":
        procs = [worker(url, queue, "--pool", "gpu", "-c", "2")]
        procs.append(worker(url, queue, "--pool", "cpu", "-c", str(CPUS)))
    else:
        ids = ",".join(str(i) for i in range(GPUS))
        extra = ["--strict-fifo"] if mode == "strict" else []
        procs = [worker(url, queue, "--gpus", ids, "--cpus", str(CPUS), *extra)]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            s = q.stats()
            if s["queued"] + s["running"] + s["delayed"] == 0 and s["succeeded"] == len(jobs):
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"{mode}: a worker exited early")
            time.sleep(0.2)
        else:
            raise SystemExit(f"{mode}: not finished within 600 s: {q.stats()}")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(60)
        q.close()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [r for r in rows if r["mode"] == mode]
    start, end = min(r["start"] for r in rows), max(r["end"] for r in rows)
    makespan = end - start
    busy = sum(r["gpus"] * (r["end"] - r["start"]) for r in rows)
    pinned = [r for r in rows if r["pinned_ok"] is not None and r["gpus"]]
    clashes = 0
    for i, a in enumerate(pinned):
        for b in pinned[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                clashes += bool(set(a["devices"]) & set(b["devices"]))
    return {
        "mode": mode,
        "jobs": len(rows),
        "makespan": makespan,
        "gpu_util": busy / (GPUS * makespan),
        "pinned_ok": sum(bool(r["pinned_ok"]) for r in pinned),
        "pinned": len(pinned),
        "device_clashes": clashes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--mean", type=float, default=0.25, help="mean run time, seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--modes", default="static,strict,backfill")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    jobs = draw_jobs(args.jobs, args.mean, args.seed)
    work = sum(g * s for g, s in jobs)
    print(f"{len(jobs)} jobs, GPU work {work:.1f} GPU-s: at best {work / GPUS:.1f} s on 8 GPUs")
    home = Path(tempfile.mkdtemp(prefix="ffbench-", dir="/tmp"))
    results = []
    try:
        url = server.ensure_running(home)
        for mode in args.modes.split(","):
            r = run_mode(url, mode, jobs, home / "rows.jsonl")
            results.append(r)
            print(
                f"{mode:9s} makespan {r['makespan']:6.1f} s  GPU utilisation "
                f"{r['gpu_util']:5.1%}  pinned ok {r['pinned_ok']}/{r['pinned']}  "
                f"device clashes {r['device_clashes']}",
                flush=True,
            )
    finally:
        server.stop(home)
        shutil.rmtree(home, ignore_errors=True)
    by = {r["mode"]: r for r in results}
    if "static" in by and "backfill" in by:
        s, b = by["static"], by["backfill"]
        print(
            f"backfill / static: makespan x{b['makespan'] / s['makespan']:.2f}, "
            f"GPU utilisation x{b['gpu_util'] / s['gpu_util']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
