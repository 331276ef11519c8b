"""Commands about jobs and queues: status, jobs, job, cancel, workers, wait, dlq."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich import box
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
    queue_names,
    short,
)

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


def _duration(j: dict[str, Any], now: float) -> float | None:
    """Seconds of the last attempt: until it finished, or until now while it runs."""
    if not j.get("started_at"):
        return None
    if j["status"] == "running":
        return max(0.0, now - float(j["started_at"]))
    if j.get("finished_at") and j["finished_at"] >= j["started_at"]:
        return float(j["finished_at"] - j["started_at"])
    return None


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.2f}s" if s < 60 else f"{s / 60:.1f}m" if s < 3600 else f"{s / 3600:.1f}h"


def jobs_table(jobs: Sequence[dict[str, Any]], title: str) -> Table:
    """Id, status, target, attempts, created, duration, worker, error; pool, priority and
    flow run only when some job has one other than the default."""
    now = time.time()
    columns: list[tuple[str, Any]] = [
        ("id", lambda j: j["id"]),
        ("status", lambda j: j["status"]),
        ("target", lambda j: j["target"]),
    ]
    if any(j["pool"] != "default" for j in jobs):
        columns.append(("pool", lambda j: j["pool"]))
    if any(j["priority"] for j in jobs):
        columns.append(("prio", lambda j: str(j["priority"])))
    columns += [
        ("att", lambda j: str(j["attempts"])),
        ("created", lambda j: fmt_clock(j["created_at"])),
        ("took", lambda j: _fmt_seconds(_duration(j, now))),
        ("worker", lambda j: j.get("worker") or "-"),
    ]
    if any(j.get("flow_run_id") for j in jobs):
        columns.append(("flow run", lambda j: (j.get("flow_run_id") or "-")[:8]))
    columns.append(("error", lambda j: short(j["error"] or "", 60)))
    if out.width < 110:  # a narrow terminal: the least telling columns go first
        dropped = {"created", "prio", "pool", "worker"} if out.width < 100 else {"created"}
        columns = [c for c in columns if c[0] not in dropped]
    table = Table(
        title=title,
        caption="params and every field: fifoflow job ID (or --json)",
        box=box.SIMPLE_HEAD,
    )
    folded = {"target": 16, "worker": 10, "error": 12}  # the rest keep their width
    for name, _ in columns:
        table.add_column(
            name, overflow="fold", no_wrap=name not in folded, min_width=folded.get(name)
        )
    for j in jobs:
        table.add_row(*(cell(j) for _, cell in columns))
    return table


def fmt_clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


def jobs(
    queue: QueueOpt = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="|".join(STATUSES))] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most N jobs.")] = 50,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first.")] = False,
    run_order: Annotated[
        bool,
        typer.Option(
            "--run-order", help="The queued jobs in the order they will run (priority, then FIFO)."
        ),
    ] = False,
    pool: Annotated[str | None, typer.Option(help="Only this pool.")] = None,
    target: Annotated[str | None, typer.Option(help="Only targets containing this text.")] = None,
    cursor: Annotated[str | None, typer.Option(help="Start where a previous page ended.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List jobs a page at a time: oldest first (by push time, or by finish/due time within a
    status); the next page's --cursor is shown on stderr."""
    if run_order:
        if status not in (None, "queued"):
            raise UsageError("--run-order lists queued jobs: leave out --status or use queued")
        if newest:
            raise UsageError("give --run-order or --newest, not both")
        status = "queued"
    q = open_queue(queue)
    found, next_cursor = q.broker.page(
        q.name,
        status,
        pool=pool,
        target=target,
        limit=limit,
        cursor=cursor,
        newest_first=newest,
        rounds=20,
        run_order=run_order,
    )
    now = time.time()
    for j in found:
        j["duration"] = _duration(j, now)
    if json_:
        emit_json(found)
    else:
        order = "run order" if run_order else "newest first" if newest else "oldest first"
        out.print(jobs_table(found, f"queue {q.name}: {len(found)} job(s), {order}"))
    if next_cursor:
        err.print(f"more: add --cursor {next_cursor}", markup=False, soft_wrap=True)


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
    record["traceback"] = q.traceback(record["id"])
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


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A job becomes cancelled; a running one is stopped by its worker first (exit 1 if it
    has already finished)."""
    q, record = _find_job(job_id, queue)
    # The script's answer, not a later read: a running job may be stopped by then.
    after = q.broker.cancel(q.name, record["id"])
    if after == "":
        raise JobNotFound(job_id)
    if after not in ("cancelled", "cancelling"):
        fail(f"job {job_id} is {after}: it has already finished", 1)
    if json_:
        emit_json({"id": record["id"], "queue": q.name, "status": after})
    elif after == "cancelling":
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
    """Live workers: what they run and have done (the server's records), health, resources."""
    broker = open_broker()
    live = broker.live_workers()
    activity = broker.activity(live)
    use = {
        (q, u.name): u
        for q in {w["queues"][0] for w in live if w.get("capacity")}
        for u in broker.resource_use(q)
    }
    for w in live:  # the server's truth, not the copy of the last heartbeat
        w["running"], w["done"] = activity[str(w["name"])]
        w["processed"] = w["done"]
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
            str(w["done"]),
            fmt_age(w["heartbeat"]),
            _health(w),
            w["resources"] or "-",
        )
    out.print(table)


__all__ = ["cancel", "job", "jobs", "status", "workers"]
