"""A hyper-parameter sweep pushed from Python and worked off by a Prefect dispatcher.

Every parameter set becomes one fifoflow job; a ``fifoflow worker --prefect`` runs each job
as a child flow run of its dispatcher flow run, so the whole sweep is one parent run with a
child per parameter set in the Prefect UI.

All in one process (push, work off with 4 slots, print the results)::

    python examples/sweep.py

Or the way it runs for real: push from anywhere, work off with as many workers as you like,
on as many machines (they share FIFOFLOW_URL, and PREFECT_API_URL for one Prefect server)::

    python examples/sweep.py push
    cd examples && fifoflow worker sweep --prefect --queue sweep --concurrency 4 --burst
    python examples/sweep.py results

The ``key`` of each job is its parameter set: pushing the sweep again while it is still
queued or running adds nothing.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time

from prefect import flow, get_run_logger, task

from fifoflow import Queue

QUEUE = "sweep"
TARGET = "sweep:train"  # module "sweep" (this file), function "train"


@task(retries=2, retry_delay_seconds=0.1)
def load_data(rows: int) -> list[float]:
    """A Prefect task inside each child: its retries and caching work as usual."""
    return [math.sin(i / 10) for i in range(rows)]


@flow(log_prints=True)
def train(learning_rate: float, depth: int, rows: int = 500) -> dict[str, float]:
    """The flow each job runs as; its params are the job's params."""
    data = load_data(rows)
    get_run_logger().info("training depth=%d lr=%g on %d rows", depth, learning_rate, len(data))
    time.sleep(0.1 * depth)  # the pretend work
    loss = abs(math.log10(learning_rate) + 2) / depth + 0.01 * depth
    print(f"final loss {loss:.4f}")
    return {"loss": round(loss, 4)}


def grid() -> list[dict[str, float]]:
    return [
        {"learning_rate": lr, "depth": depth}
        for lr, depth in itertools.product((0.001, 0.01, 0.1), (2, 4, 6, 8))
    ]


def push(queue: Queue) -> None:
    params = grid()
    jobs = queue.push_many(
        TARGET, params, keys_=[json.dumps(p, sort_keys=True) for p in params], retries=2
    )
    print(f"pushed {len(jobs)} jobs onto queue {queue.name!r}")


def results(queue: Queue) -> None:
    rows = [r for r in queue.jobs() if r["target"] == TARGET]
    done = sorted(
        (r for r in rows if r["status"] == "succeeded"), key=lambda r: r["result"]["loss"]
    )
    for r in done:
        print(f"loss {r['result']['loss']:.4f}  {r['params']}  flow run {r['flow_run_id']}")
    others = [r for r in rows if r["status"] != "succeeded"]
    for r in others:
        print(f"{r['status']:>9}  {r['params']}  {r['error'] or ''}")


def main(argv: list[str]) -> int:
    queue = Queue(QUEUE)
    command = argv[0] if argv else "all"
    if command in ("push", "all"):
        push(queue)
    if command == "all":
        from fifoflow.prefect import PrefectWorker

        PrefectWorker([QUEUE], ["sweep"], concurrency=4).run(burst=True)
    if command in ("results", "all"):
        results(queue)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
