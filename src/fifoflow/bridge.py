"""The bridge: a raw Redis list of JSON objects (the params), pushed with ``LPUSH`` by any
producer in any language, moved into a fifoflow queue as jobs of one target, in order,
losing and duplicating nothing.

One batch is one step: the oldest items of the list are read (``Broker.list_tail``),
checked here exactly as ``fifoflow push`` checks params, and moved by one script
(``Broker.bridge``: ``bridge.lua``) that takes them off the list in the same step as their
jobs appear, after checking that the list's tail is still what was read. A malformed item
goes to the list ``SOURCE:rejected`` as ``{"item": ..., "error": ..., "at": ...}``. So a
bridge killed at any moment leaves every item either in the list or moved, once.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .errors import QueueFull, UsageError
from .queue import Queue
from .records import PushSpec
from .validation import encode_params, integer, seconds, validate_name, validate_target

log = logging.getLogger("fifoflow.bridge")

#: Items moved per script call at most (``broker_push.BATCH`` is the push's own cap).
MAX_BATCH = 5000


def check(item: bytes, max_bytes: int) -> tuple[bool, str]:
    """``(True, params_json)`` for an item push would accept, else ``(False, reason)``."""
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError:
        return False, "not UTF-8 text"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return False, f"invalid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return False, "invalid JSON (nested too deeply)"
    if not isinstance(doc, dict):
        return False, f"expected a JSON object (the params), got {type(doc).__name__}"
    try:
        return True, encode_params(doc, max_bytes)
    except (TypeError, ValueError) as e:
        return False, str(e)


def rejected_entry(item: bytes, reason: str, now: float) -> str:
    """What the rejected list keeps of a refused item: the item itself and why."""
    try:
        shown: dict[str, Any] = {"item": item.decode("utf-8")}
    except UnicodeDecodeError:
        shown = {"item_base64": base64.b64encode(item).decode()}
    return json.dumps({**shown, "error": reason, "at": round(now, 6)}, ensure_ascii=False)


@dataclass
class Totals:
    moved: int = 0
    rejected: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "moved": self.moved,
            "rejected": self.rejected,
            "batches": self.batches,
            "seconds": round(time.monotonic() - self.started, 3),
        }


class Bridge:
    """Moves ``source`` into ``queue`` as jobs of ``target`` (with push's options)."""

    def __init__(
        self,
        queue: Queue,
        source: str,
        target: str,
        *,
        batch: int = 500,
        pool: str = "default",
        priority: int = 0,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(source, str) or not source or len(source) > 512:
            raise UsageError("the source list's name must be 1-512 characters")
        if not 1 <= integer("batch", batch) <= MAX_BATCH:
            raise UsageError(f"batch must be 1-{MAX_BATCH}, not {batch}")
        topology = queue.broker.topology
        if topology.cluster and int(topology.client.keyslot(source)) != int(
            topology.client.keyslot(keys.prefix(queue.name))
        ):  # one script moves the items: the list must live in the queue's hash slot
            raise UsageError(
                f"on a cluster the list must share the queue's hash tag: name it like "
                f"'{{{queue.name}}}{source}' ({source!r} is in another hash slot)"
            )
        self.queue, self.source, self.batch = queue, source, batch
        settings = queue.settings
        self.spec = PushSpec(
            target=validate_target(target),
            priority=integer("priority", priority),
            pool=validate_name("pool", pool),
            retries=integer("retries", settings.retries if retries is None else retries, 0),
            timeout=seconds(
                "timeout",
                settings.timeout_seconds if timeout is None else timeout,
                allow_zero=False,
            ),
        )
        self.max_bytes = settings.max_params_bytes
        self.totals = Totals()

    def step(self) -> tuple[int, int] | None:
        """Move one batch: (moved, rejected), (0, 0) if the list is empty, None if the list
        changed under it (another consumer: read again). Raises ``QueueFull``."""
        broker = self.queue.broker
        items = broker.list_tail(self.queue.name, self.source, self.batch)
        if not items:
            return 0, 0
        now = time.time()
        verdicts = []
        for item in items:
            ok, text = check(item, self.max_bytes)
            verdicts.append((True, text) if ok else (False, rejected_entry(item, text, now)))
        done = broker.bridge(self.queue.name, self.source, self.spec, items, verdicts)
        if done is not None:
            self.totals.moved += done[0]
            self.totals.rejected += done[1]
            self.totals.batches += 1
            if done[1]:
                log.warning("bridge: %d item(s) rejected to %s:rejected", done[1], self.source)
        return done

    def run(self, stop: threading.Event, burst: bool = False, idle_max: float = 0.2) -> Totals:
        """Move batches until ``stop`` is set (or, with ``burst``, the list is empty). An
        empty list is looked at again after 10 ms, backing off to ``idle_max``; a full
        queue after a second (nothing moves meanwhile)."""
        idle = 0.01
        full_since: float | None = None
        while not stop.is_set():
            try:
                done = self.step()
            except QueueFull as e:
                if full_since is None:
                    full_since = time.monotonic()
                    log.warning("bridge: %s; waiting", e)
                stop.wait(1.0)
                continue
            if full_since is not None:
                log.info("bridge: the queue has room again")
                full_since = None
            if done is None:
                continue  # read the new tail at once
            if done == (0, 0):
                if burst:
                    break
                stop.wait(idle)
                idle = min(idle * 2, idle_max)
            else:
                idle = 0.01
        return self.totals
