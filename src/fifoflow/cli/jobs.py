"""Commands about jobs and queues: status, jobs, job, cancel, workers, wait, dlq."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.table import Table

from ..broker_resources import describe_use
from ..errors import JobNotFound, UsageError
from ..queue import STATUSES, Queue
from .common import (
    JsonOpt,
    QueueOpt,
    emit_json,
    err,
    fail,
    fmt_age,
    fmt_time,
    open_broker,
    open_queue,
    out,
    progress,
    queue_names,
    short,
)

dlq_app = typer.Typer(help="The dead-letter queue: list, requeue, purge.", no_args_is_help=True)


# -- inspecting --------------------------------------------------------------------------


def status(queue: QueueOpt = None, json_: JsonOpt = False) -> None:
    """Counts per queue and status, and the number of live workers."""
    broker = open_broker()
    counts = {n: broker.counts(n) for n in queue_names(broker, queue)}
    workers = len(broker.live_workers())
    # Why a line waits for resources: its head fits no live worker's free capacity.
    waiting = [line for n, c in counts.items() if c["queued"] for line in broker.explain_head(n)]
    if json_:
        doc: dict[str, Any] = {"queues": counts, "workers": workers}
        if waiting:  # heads waiting for resources, explained
            doc["waiting"] = waiting
        emit_json(doc)
        return
    table = Table("queue", *STATUSES, title=f"fifoflow: {workers} worker(s) live")
    for name, c in counts.items():
        table.add_row(name, *(str(c[s]) for s in STATUSES))
    if not counts:
        table.caption = "no queues yet: fifoflow push TARGET --params '{...}'"
    out.print(table)
    for line in waiting:
        out.print(line, markup=False, highlight=False)


def _jobs_table(jobs: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for name in ("id", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("target", overflow="fold")
    table.add_column("params", overflow="fold")
    for name in ("pool", "prio", "att", "created"):
        table.add_column(name, no_wrap=True)
    table.add_column("error", overflow="fold")
    for j in jobs:
        table.add_row(
            j["id"],
            j["status"],
            j["target"],
            short(j["params"], 30),
            j["pool"],
            str(j["priority"]),
            str(j["attempts"]),
            time.strftime("%H:%M:%S", time.localtime(j["created_at"])) if j["created_at"] else "-",
            short(j["error"] or "", 40),
        )
    return table


def jobs(
    queue: QueueOpt = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="|".join(STATUSES))] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most N jobs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List jobs, oldest first."""
    q = open_queue(queue)
    found = q.jobs(status, limit)
    if json_:
        emit_json(found)
    else:
        out.print(_jobs_table(found, f"queue {q.name}: {len(found)} job(s)"))


def _find_job(job_id: str, queue: str | None) -> tuple[Queue, dict[str, Any]]:
    broker = open_broker()
    for name in queue_names(broker, queue):
        q = Queue(name, broker=broker)
        record = q.record(job_id)
        if record is not None:
            return q, record
    raise JobNotFound(job_id)


def job(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One job, every field (and the traceback of its last failure)."""
    q, record = _find_job(job_id, queue)
    record["traceback"] = q.traceback(job_id)
    if json_:
        emit_json(record)
        return
    table = Table(show_header=False, title=f"job {job_id}")
    for k, v in record.items():
        if k in ("created_at", "started_at", "finished_at", "due_at") and v:
            v = f"{v:.6f} ({fmt_time(v)})"
        elif k == "traceback":
            continue
        table.add_row(k, "-" if v is None else short(v, 100))
    out.print(table)
    if record["traceback"]:
        out.print(record["traceback"], markup=False)


def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")], queue: QueueOpt = None) -> None:
    """A job becomes cancelled; a running one is stopped by its worker first."""
    q, record = _find_job(job_id, queue)
    if not q.cancel(job_id):
        now = q.record(job_id) or record
        fail(f"job {job_id} is {now['status']}: it has already finished", 1)
    now = q.record(job_id) or record
    if now["status"] == "running":
        out.print(f"cancelling {job_id}: its worker stops it, then it is cancelled")
    else:
        out.print(f"cancelled {job_id}")


def _health(w: dict[str, Any]) -> str:
    h = w.get("health") or {}
    problems = []
    if h.get("dead_threads"):
        problems.append(f"{h['dead_threads']} thread(s) restarted")
    if h.get("abandoned"):
        problems.append(f"{h['abandoned']} abandoned")
    if h.get("last_error") and h.get("last_error_at", 0) > time.time() - 60:
        problems.append(f"{fmt_age(h['last_error_at'])}: {short(h['last_error'], 50)}")
    return "; ".join(problems) or "ok"


def workers(json_: JsonOpt = False) -> None:
    """Live workers, what they run, and their health."""
    broker = open_broker()
    live = broker.live_workers()
    use = {
        (q, u.name): u
        for q in {w["queues"][0] for w in live if w.get("capacity")}
        for u in broker.resource_use(q)
    }
    for w in live:
        u = use.get((w["queues"][0], w["name"])) if w.get("capacity") else None
        w["resources"] = describe_use(u) if u is not None else None
    if json_:
        emit_json(live)
        return
    table = Table(
        "name",
        "host",
        "pid",
        "queues",
        "pools",
        "slots",
        "running",
        "done",
        "heartbeat",
        "health",
        "resources (used/capacity)",
        title=f"{len(live)} worker(s)",
    )
    for w in live:
        table.add_row(
            w["name"],
            w["host"],
            str(w["pid"]),
            ",".join(w["queues"]),
            ",".join(w["pools"]),
            str(w["concurrency"]),
            str(len(w["running"])),
            str(w.get("processed", 0)),
            fmt_age(w["heartbeat"]),
            _health(w),
            w["resources"] or "-",
        )
    out.print(table)


def wait(
    queue: QueueOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after S seconds (exit 1).")] = None,
    interval: Annotated[float, typer.Option(hidden=True)] = 0.2,
) -> None:
    """Block until nothing is queued, delayed or running."""
    if timeout is not None and not timeout >= 0:  # NaN too
        raise UsageError("--timeout must be >= 0")
    broker = open_broker()
    names = queue_names(broker, queue)

    def pending() -> int:
        return sum(
            c["queued"] + c["delayed"] + c["running"] for c in (broker.counts(n) for n in names)
        )

    deadline = None if timeout is None else time.monotonic() + timeout
    left = pending()
    total = left
    with progress("waiting") as bar:
        task = bar.add_task("wait", total=total)
        while left > 0:
            if deadline is not None and time.monotonic() >= deadline:
                fail(f"timed out after {timeout:g}s with {left} job(s) still pending", 1)
            time.sleep(interval)
            left = pending()
            total = max(total, left)
            bar.update(task, total=total, completed=total - left)


# -- dead letters --------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    queue: QueueOpt = None,
    limit: Annotated[int | None, typer.Option(min=0)] = None,
    json_: JsonOpt = False,
) -> None:
    """Dead jobs, oldest first."""
    q = open_queue(queue)
    dead = q.dead_letters(limit)
    if json_:
        emit_json(dead)
    else:
        out.print(_jobs_table(dead, f"dead letters of {q.name}: {len(dead)}"))


@dlq_app.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead job.")] = False,
    queue: QueueOpt = None,
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
    out.print(f"requeued {len(done)} job(s)")


@dlq_app.command("purge")
def dlq_purge(queue: QueueOpt = None) -> None:
    """Delete every dead job of the queue."""
    q = open_queue(queue)
    out.print(f"purged {q.purge_dead()} dead job(s) from {q.name}")


__all__ = ["cancel", "dlq_app", "err", "job", "jobs", "status", "wait", "workers"]
