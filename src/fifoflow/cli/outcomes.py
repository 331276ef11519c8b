"""Commands about the end of jobs: ``wait`` (until nothing is pending, then what ended
meanwhile) and ``dlq`` (the dead letters: list, requeue, purge)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import typer

from ..broker import Broker
from ..errors import JobNotFound, UsageError
from .common import (
    JsonOpt,
    QueueOpt,
    emit_json,
    fail,
    group,
    open_broker,
    open_queue,
    out,
    progress,
    queue_names,
)
from .jobs import jobs_table

dlq_app = group("The dead-letter queue: list, requeue, purge.")


FINISHED = ("succeeded", "dead", "cancelled")


def _finished(broker: Broker, names: Sequence[str]) -> dict[str, int]:
    """Monotonic counts of jobs that ended, per fate, over the queues (all pools)."""
    totals = dict.fromkeys(FINISHED, 0)
    for n in names:
        counters = broker.metrics(n)["counters"]
        for fate in FINISHED:
            totals[fate] += sum(counters.get(fate, {}).values())
    return totals


def wait(
    queue: QueueOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after S seconds (exit 1).")] = None,
    fail_on_dead: Annotated[
        bool, typer.Option("--fail-on-dead", help="Exit 1 if any dead job is left in the queues.")
    ] = False,
    interval: Annotated[float, typer.Option(hidden=True)] = 0.2,
    json_: JsonOpt = False,
) -> None:
    """Block until nothing is queued, delayed or running; then one line: what ended meanwhile."""
    if timeout is not None and not timeout >= 0:  # NaN too
        raise UsageError("--timeout must be >= 0")
    broker = open_broker()
    names = queue_names(broker, queue)

    def pending() -> int:
        return sum(
            c["queued"] + c["delayed"] + c["running"] for c in (broker.counts(n) for n in names)
        )

    started = time.monotonic()
    before = _finished(broker, names)
    deadline = None if timeout is None else started + timeout
    left = pending()
    total = left
    timed_out = False
    with progress("waiting") as bar:
        task = bar.add_task("wait", total=total)
        while left > 0:
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(interval)
            left = pending()
            total = max(total, left)
            bar.update(task, total=total, completed=total - left)
    after = _finished(broker, names)
    ended = {fate: after[fate] - before[fate] for fate in FINISHED}
    dead_now = sum(broker.counts(n)["dead"] for n in names)
    seconds = time.monotonic() - started
    if json_:  # the same document on a timeout, so a script can read how far it got
        emit_json(
            {
                "queues": list(names),
                "seconds": round(seconds, 3),
                **ended,
                "dead_now": dead_now,
                "pending": left,
                "timed_out": timed_out,
            }
        )
    if timed_out:
        fail(f"timed out after {timeout:g}s with {left} job(s) still pending", 1)
    if not json_:
        out.print(
            f"all done after {seconds:.1f}s: {ended['succeeded']} succeeded, {ended['dead']} dead, "
            f"{ended['cancelled']} cancelled meanwhile; {dead_now} dead job(s) in the queue(s)",
            markup=False,
            soft_wrap=True,
        )
    if fail_on_dead and dead_now:
        fail(f"{dead_now} dead job(s) in {', '.join(names)} (fifoflow dlq list)", 1)


# -- dead letters --------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    queue: QueueOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    json_: JsonOpt = False,
) -> None:
    """Dead jobs, the oldest deaths first."""
    q = open_queue(queue)
    dead, _ = q.broker.page(q.name, "dead", limit=limit, newest_first=False)
    if json_:
        emit_json(dead)
    else:
        out.print(jobs_table(dead, f"dead letters of {q.name}: {len(dead)}"))


@dlq_app.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead job.")] = False,
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Put dead jobs back at their places in line, with fresh retries."""
    if bool(ids) == all_:
        raise UsageError("give job ids or --all")
    q = open_queue(queue)
    if ids:
        for i in ids:
            record = q.record(i)
            if record is None:
                raise JobNotFound(i)
            if record["status"] != "dead":
                raise UsageError(f"job {i} is {record['status']}, not dead")
    done = q.requeue(ids if ids else None)
    if json_:
        emit_json({"queue": q.name, "requeued": done})
    else:
        out.print(f"requeued {len(done)} job(s)")


@dlq_app.command("purge")
def dlq_purge(queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Delete every dead job of the queue."""
    q = open_queue(queue)
    purged = q.purge_dead()
    if json_:
        emit_json({"queue": q.name, "purged": purged})
    else:
        out.print(f"purged {purged} dead job(s) from {q.name}")


__all__ = ["dlq_app", "wait"]
