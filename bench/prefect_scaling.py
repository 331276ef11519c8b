"""Prefect mode, children per second at 1, 2, 4 and 8 slots, with threads and processes.

    .venv/bin/python bench/prefect_scaling.py                 # starts `prefect server start`
    .venv/bin/python bench/prefect_scaling.py --api http://127.0.0.1:4200/api
    .venv/bin/python bench/prefect_scaling.py --slots 1 4 --modes threads -n 60 --reps 3

Each measurement pushes N jobs of a no-op plain function (``noop`` below) to an embedded
Valkey (a temporary FIFOFLOW_HOME) and works them off with a ``PrefectWorker`` in burst
mode, in a subprocess of its own: every job a child flow run of the dispatcher's run.

Children/s is the steady rate: the jobs finished after each slot's first one, divided by
the time from the slots' first finish to the last finish (``(N - s) / span``), so the
fixed costs (Prefect's import and the dispatcher run, a process slot's spawn and import)
are left out. Medians of ``--reps`` runs, modes and slot counts interleaved; the machine's
load (cores busy, from ``/proc/stat`` during each run) is printed alongside, because this
is meant for small shared machines where other work competes for the same cores.

Without ``--api``, a ``prefect server start`` (SQLite, a temporary PREFECT_HOME, a free
loopback port) is started for the run and stopped by pid at the end; with ``--database
postgresql+asyncpg://...`` it uses that database instead, and ``--server-workers N`` runs
N server processes (Prefect allows more than one only on PostgreSQL); with ``--ephemeral``
each measurement runs on Prefect's local ephemeral API (a server the worker's Prefect
starts itself, on SQLite in the bench's PREFECT_HOME; its CPU is not in the table). Not a
test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def noop() -> None:
    """The job: nothing, so what is measured is the cost of a child flow run."""
    return None


# -- one measurement (in a subprocess) ----------------------------------------------------


def measure(slots: int, mode: str, n: int, url: str) -> dict[str, Any]:
    from fifoflow import Queue
    from fifoflow.prefect import PrefectWorker

    if mode == "processes" and not getattr(PrefectWorker, "supports_processes", False):
        return {"refused": "--prefect --processes refused by this version"}
    q = Queue(f"bench-pscale-{mode}-{slots}-{os.getpid()}", url=url)
    q.push_many("prefect_scaling:noop", [{} for _ in range(n)])
    options = {"events": False} if os.environ.get("BENCH_NO_EVENTS") else {}
    worker = PrefectWorker(
        [q.name],
        ["prefect_scaling"],
        concurrency=slots,
        processes=mode == "processes",
        url=url,
        grace=5,
        **options,
    )
    cpu0 = _cpu_self()
    started = time.monotonic()
    worker.run(burst=True)
    whole = time.monotonic() - started
    cpu = _cpu_self() - cpu0
    records = [q.record(i) for i in q.job_ids()]
    bad = [r for r in records if r["status"] != "succeeded"]
    finished = sorted(r["finished_at"] for r in records if r["finished_at"])
    k = min(slots, len(finished) - 1)
    span = finished[-1] - finished[k - 1] if k >= 1 else 0.0
    rate = (len(finished) - k) / span if span > 0 else 0.0
    return {
        "rate": rate,
        "whole_s": whole,
        "failed": len(bad),
        "jobs": len(records),
        "worker_cpu_ms": 1000 * cpu / max(len(records), 1),
        # "database is busy" answers to the dispatcher's requests (thread slots' children)
        "busy": getattr(getattr(worker, "gate", None), "busy", None),
    }


def _cpu_self() -> float:
    """CPU seconds of this process and its reaped children (process slots)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# -- the driver ---------------------------------------------------------------------------


def cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts), idle


def group_cpu(pgid: int | None) -> float:
    """CPU seconds used so far by the processes of a process group (the Prefect server)."""
    if pgid is None:
        return 0.0
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, database: str | None = None, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    if database:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "prefect"), "server", "start"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-ui"),
            *(("--workers", str(workers)) if workers > 1 else ()),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited: see {home / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, api
        except OSError:
            time.sleep(0.5)
    raise SystemExit("prefect server did not come up in 180 s")


def run_one(
    slots: int, mode: str, n: int, api: str, url: str, home: Path, pgid: int | None
) -> dict[str, Any]:
    env = dict(
        os.environ,
        PREFECT_HOME=str(home / "client"),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    if api:
        env["PREFECT_API_URL"] = api
    else:
        env.pop("PREFECT_API_URL", None)
    total0, idle0 = cpu_times()
    load0 = os.getloadavg()[0]
    server0 = group_cpu(pgid)
    proc = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps([slots, mode, n, url])],
        env=env,
        capture_output=True,
        timeout=600,
    )
    total1, idle1 = cpu_times()
    server_cpu = group_cpu(pgid) - server0
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        return {"error": f"exit {proc.returncode}: {tail}"}
    lines = proc.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    ncpu = os.cpu_count() or 1
    result["busy_cores"] = ncpu * (1 - (idle1 - idle0) / max(total1 - total0, 1e-9))
    result["load1"] = load0
    if pgid is not None:
        result["server_cpu_ms"] = 1000 * server_cpu / n
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=40, help="jobs per measurement [40]")
    p.add_argument("--reps", type=int, default=3, help="runs per cell, the median kept [3]")
    p.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--modes", nargs="+", default=["threads", "processes"])
    p.add_argument("--api", help="a running Prefect API [start `prefect server start`]")
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="no server: each measurement runs on Prefect's local ephemeral API (SQLite)",
    )
    p.add_argument("--database", help="the started server's database URL [SQLite]")
    p.add_argument("--server-workers", type=int, default=1, help="its processes [1]")
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--no-events", action="store_true", help="PrefectWorker(events=False)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        slots, mode, n, url = json.loads(args.one)
        print(json.dumps(measure(slots, mode, n, url)))
        return 0

    # A stop (SIGTERM, or SIGINT where a shell left it ignored) still stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.no_events:
        os.environ["BENCH_NO_EVENTS"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="ffbench-pscale-"))
    (tmp / "client").mkdir()
    os.environ["FIFOFLOW_HOME"] = str(tmp / "ff")
    os.environ.pop("FIFOFLOW_URL", None)
    from fifoflow import server

    server_proc = None
    ncpu = os.cpu_count() or 1
    total0, idle0 = cpu_times()
    time.sleep(1.0)
    total1, idle1 = cpu_times()
    before = ncpu * (1 - (idle1 - idle0) / max(total1 - total0, 1e-9))
    url = server.ensure_running(tmp / "ff", appendfsync="no")
    try:
        if args.ephemeral:
            api = ""  # run_one leaves PREFECT_API_URL unset
        elif args.api:
            api = args.api
        else:
            server_proc, api = start_server(tmp, args.database, args.server_workers)
        print(
            f"{ncpu} cores; {before:.2f} busy before the runs (other work), "
            f"load average {os.getloadavg()[0]:.2f}; API {api}",
            flush=True,
        )
        cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rep in range(args.reps):
            for slots in args.slots:
                for mode in args.modes:
                    pgid = None if server_proc is None else server_proc.pid
                    r = run_one(slots, mode, args.n, api, url, tmp, pgid)
                    cells.setdefault((mode, slots), []).append(r)
                    shown = (
                        f"{r['rate']:.2f}/s busy {r['busy_cores']:.2f} load {r['load1']:.2f}"
                        f" cpu/child worker {r['worker_cpu_ms']:.0f} ms"
                        f" server {r.get('server_cpu_ms', float('nan')):.0f} ms"
                        f" busy answers {r.get('busy')}"
                        if "rate" in r
                        else r.get("refused") or r.get("error", "")[-300:]
                    )
                    print(f"rep {rep + 1} {mode:9} {slots} slot(s): {shown}", flush=True)
        print(
            "\n| mode | slots | children/s (median) | runs | vs 1 slot | cores busy | load "
            "| CPU ms/child: worker, server |"
        )
        print("|---|---|---|---|---|---|---|---|")
        table = []
        for mode in args.modes:
            base = None
            for slots in args.slots:
                runs = [r for r in cells[(mode, slots)] if "rate" in r]
                if not runs:
                    why = cells[(mode, slots)][0].get("refused", "error")
                    print(f"| {mode} | {slots} | {why} | | | | | |")
                    continue
                med = statistics.median(r["rate"] for r in runs)
                base = med if slots == 1 else base
                ratio = f"{med / base:.2f}" if base else ""
                rates = ", ".join(f"{r['rate']:.2f}" for r in runs)
                busy = statistics.median(r["busy_cores"] for r in runs)
                load = statistics.median(r["load1"] for r in runs)
                wcpu = statistics.median(r["worker_cpu_ms"] for r in runs)
                scpu = statistics.median(r.get("server_cpu_ms", float("nan")) for r in runs)
                print(
                    f"| {mode} | {slots} | {med:.2f} | {rates} | x{ratio} | {busy:.2f} "
                    f"| {load:.2f} | {wcpu:.0f}, {scpu:.0f} |"
                )
                table.append({"mode": mode, "slots": slots, "median": med, "runs": runs})
        if args.json:
            Path(args.json).write_text(json.dumps(table, indent=1))
    finally:
        if server_proc is not None:
            os.killpg(server_proc.pid, signal.SIGTERM)
            try:
                server_proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server_proc.pid, signal.SIGKILL)
        server.stop(tmp / "ff")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
