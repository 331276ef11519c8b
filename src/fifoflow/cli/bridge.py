"""``fifoflow bridge``: a raw Redis list (JSON objects pushed with LPUSH, by any producer)
moved into a queue as jobs, in order, losing and duplicating nothing (``fifoflow.bridge``)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from ..bridge import MAX_BATCH, Bridge
from .common import JsonOpt, QueueOpt, RetriesOpt, TimeoutOpt, emit_json, err, open_queue, out


def bridge(
    from_list: Annotated[
        str, typer.Option("--from-list", help="The raw list to move (oldest item at the right).")
    ],
    target: Annotated[
        str, typer.Option("--target", help="package.module:function each item's job runs.")
    ],
    queue: QueueOpt = None,
    pool: Annotated[str, typer.Option(help="Pool of workers that may run them.")] = "default",
    priority: Annotated[int, typer.Option(help="Higher starts first.")] = 0,
    retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    batch: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH, help="Items moved per step (one script call).")
    ] = 500,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the list is empty (else run until stopped).")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Move a raw Redis list of JSON objects (the params; pushed with LPUSH) into a queue,
    in order, atomically a batch at a time; a malformed item goes to LIST:rejected."""
    q = open_queue(queue)
    mover = Bridge(
        q,
        from_list,
        target,
        batch=batch,
        pool=pool,
        priority=priority,
        retries=retries,
        timeout=timeout,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not burst:
        err.print(
            f"fifoflow bridge: {from_list} -> queue {q.name} as {target} (SIGTERM stops it)",
            markup=False,
            soft_wrap=True,
        )
    totals = mover.run(stop, burst=burst).to_dict()
    if json_:
        emit_json({"source": from_list, "queue": q.name, "target": target, **totals})
    else:
        out.print(
            f"moved {totals['moved']} item(s) from {from_list} to queue {q.name}; "
            f"{totals['rejected']} rejected to {from_list}:rejected",
            markup=False,
            soft_wrap=True,
        )
