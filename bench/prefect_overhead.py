"""What a job costs in Prefect mode: the dispatcher against a plain loop of subflow calls.

    .venv/bin/python bench/prefect_overhead.py            # 40 children each way
    .venv/bin/python bench/prefect_overhead.py -n 100 --concurrency 4

Both ways run N children of a no-op flow, one after the other, in one process, against the
same Prefect API (``PREFECT_API_URL`` if set, else the local ephemeral one on a temporary
PREFECT_HOME, or the one given with ``--prefect-home``):

* **loop**: a parent flow calling ``noop()`` N times: Prefect's own in-process subflows;
* **dispatcher**: N jobs of ``noop`` pushed to an embedded Valkey (a temporary
  FIFOFLOW_HOME) and worked off by a ``PrefectWorker`` in burst mode: each job a child flow
  run of the dispatcher, plus the queue's claim / ack round trips;
* **plain worker** (for reference): the same N jobs run by a plain ``Worker``, no Prefect.

Per child is the span from the first child's start to the last one's end, divided by N:
fixed costs (API server start, parent flow run) are left out and printed apart. Not a test,
not run in CI: its numbers depend on the machine and on the Prefect API's database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODULE = "__main__"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="children each way [40]")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="dispatcher slots [1: like the loop]"
    )
    parser.add_argument("--prefect-home", help="PREFECT_HOME to use [a temporary one]")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ffbench-prefect-"))
    if "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_HOME"] = args.prefect_home or str(tmp / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["FIFOFLOW_HOME"] = str(tmp / "ff")
    os.environ.pop("FIFOFLOW_URL", None)

    # Defined only now, so that PREFECT_HOME is set before Prefect is imported.
    globals()["noop"] = _define_noop()
    from fifoflow import Queue, server
    from fifoflow.prefect import PrefectWorker
    from fifoflow.worker import Worker

    url = server.ensure_running(tmp / "ff")
    try:
        started = time.monotonic()
        run_loop(1, heartbeats=True)  # starts the API server and warms up
        print(f"Prefect API up and a first subflow run in {time.monotonic() - started:.1f}s")
        loop = run_loop(args.n, heartbeats=True) / args.n
        loop_quiet = run_loop(args.n, heartbeats=False) / args.n

        q = Queue("bench-prefect", url=url)
        q.push_many(f"{MODULE}:noop", [{} for _ in range(args.n)])
        worker = PrefectWorker([q.name], [MODULE], concurrency=args.concurrency, url=url, grace=5)
        started = time.monotonic()
        worker.run(burst=True)
        total = time.monotonic() - started
        span = job_span(q)
        dispatcher = span / args.n

        q2 = Queue("bench-plain", url=url)
        q2.push_many(f"{MODULE}:plain_noop", [{} for _ in range(args.n)])
        Worker([q2.name], [MODULE], concurrency=1, url=url).run(burst=True)
        plain = job_span(q2) / args.n
    finally:
        server.stop(tmp / "ff")
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.n} children of a no-op flow, one process, sequential unless told otherwise")
    slots = f"{args.concurrency} slot{'s' if args.concurrency > 1 else ''}"
    rows = [
        ("loop of subflow calls, Prefect defaults", loop, ""),
        ("loop of subflow calls, no run heartbeats", loop_quiet, ""),
        (
            f"fifoflow dispatcher, {slots}",
            dispatcher,
            f"  x{dispatcher / loop_quiet:.2f} the loop without heartbeats,"
            f" x{dispatcher / loop:.2f} with (whole run {total:.1f}s incl. fixed costs)",
        ),
        ("plain fifoflow Worker (no Prefect)", plain, ""),
    ]
    for label, seconds, note in rows:
        print(f"  {label:<42} {seconds * 1000:7.1f} ms per child{note}")
    return 0


def run_loop(n: int, heartbeats: bool) -> float:
    """A parent flow calling the no-op flow ``n`` times; the span of the calls, in seconds.

    Without heartbeats is how the dispatcher runs its children (``child_heartbeats``): with
    them, each run waits up to a second for its heartbeat thread when it ends.
    """
    import contextlib

    from prefect import flow
    from prefect.settings import temporary_settings

    @flow(name="bench-loop-parent")
    def parent(n: int) -> float:
        child = globals()["noop"]
        quiet = temporary_settings(updates={"flows.heartbeat_frequency": None})
        with contextlib.nullcontext() if heartbeats else quiet:
            started = time.monotonic()
            for _ in range(n):
                child()
            return time.monotonic() - started

    return float(parent(n))


def job_span(q: Any) -> float:
    records = [q.record(i) for i in q.job_ids()]
    assert all(r["status"] == "succeeded" for r in records), records
    return max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)


def plain_noop() -> None:
    return None


def _define_noop() -> Any:
    from prefect import flow

    @flow(name="bench-noop")
    def noop() -> None:
        return None

    return noop


if __name__ == "__main__":
    sys.exit(main())
