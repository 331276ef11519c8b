"""The scheduler: a worker service (``fifoflow worker --scheduler``) that fires the
schedules of the worker's queues.

It sleeps until the next tick (by the server's clock, which every scheduler shares, and
at most ``RELOOK`` seconds, to see new, paused and removed schedules), then, for each
schedule with ticks due, asks ``schedules.plan`` what to do and hands that to the broker:
one ``once.lua`` call pushes the ticks' jobs and moves the schedule's watermark from the
value this scheduler read, or changes nothing if another scheduler moved it first. So any
number of workers may run a scheduler: each tick fires exactly once, and no single
process is needed. It stops when the worker stops.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .errors import QueueFull
from .records import PushSpec
from .schedules import Schedule, plan, tick_key, utc_text
from .validation import encode_params

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("fifoflow.scheduler")

#: Seconds between two looks at most (new, paused and removed schedules are seen then).
RELOOK = 2.0
#: A look starts this long after the tick it waits for (the server's clock is the judge).
AFTER_TICK = 0.002


class Scheduler:
    name = "fifoflow-scheduler"

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self._bad: set[tuple[str, str]] = set()  # schedules that could not be read (logged)
        self._full: set[tuple[str, str]] = set()  # schedules whose queue was full (logged)

    def run(self) -> None:
        w = self.w
        log.info("worker %s: scheduler on for queue(s) %s", w.name, ",".join(w.queues))
        while not w.stopping.is_set():
            wait = w.retry.once(self.look)
            w.stopping.wait(RELOOK if wait is None else wait)

    def look(self) -> float:
        """Fire what is due in the worker's queues; returns seconds until the next look."""
        w = self.w
        now = w.broker.server_time()
        read_at = time.monotonic()
        soonest = now + RELOOK
        for queue in w.queues:
            for name, raw in w.broker.schedules(queue).items():
                try:
                    s = Schedule.from_hash(queue, name, raw)
                except (ValueError, TypeError, KeyError) as e:
                    if (queue, name) not in self._bad:
                        self._bad.add((queue, name))
                        log.error("schedule %s (queue %s) cannot be read: %s", name, queue, e)
                    continue
                if s.paused:
                    continue
                if self.handle(s, now):
                    return 0.0  # a long catch-up: the next batch at once
                soonest = min(soonest, s.spec.next_tick(max(s.last, now)))
        server_now = now + time.monotonic() - read_at
        return max(soonest - server_now, 0.0) + AFTER_TICK

    def handle(self, s: Schedule, now: float) -> bool:
        """Fire the schedule's due ticks; True if some were left for the next call."""
        p = plan(s.spec, s.last, now)
        if p is None:
            return False
        spec = s.spec
        push = PushSpec(
            target=spec.target,
            priority=spec.priority,
            pool=spec.pool,
            retries=spec.retries,
            timeout=spec.timeout,
        )
        max_bytes = self.w.settings.max_params_bytes
        jobs = [(encode_params(spec.params_for(t), max_bytes), tick_key(s.name, t)) for t in p.fire]
        try:
            fired = self.w.broker.fire(
                s.queue,
                s.name,
                push,
                jobs,
                expected=s.last,
                watermark=p.watermark,
                skipped=p.skipped,
                last_fired=p.fire[-1] if p.fire else None,
            )
        except QueueFull as e:
            if (s.queue, s.name) not in self._full:
                self._full.add((s.queue, s.name))
                log.warning("schedule %s: %s; its ticks wait", s.name, e)
            return False
        self._full.discard((s.queue, s.name))
        if fired.outcome != "ok":  # another scheduler was first, or it was paused/removed
            log.debug("schedule %s: %s", s.name, fired.outcome)
            return False
        ticks = ", ".join(utc_text(t) for t in p.fire[:3]) + (" ..." if len(p.fire) > 3 else "")
        if p.missed:
            log.info(
                "schedule %s (queue %s): %d tick(s) missed (older than the %ds grace), "
                "catch-up %s: fired %d tick(s) (%s), skipped %d",
                s.name,
                s.queue,
                p.missed,
                spec.grace,
                spec.catchup,
                len(p.fire),
                ticks or "-",
                p.skipped,
            )
        else:
            log.debug(
                "schedule %s (queue %s): fired %d tick(s): %s", s.name, s.queue, len(p.fire), ticks
            )
        return p.more
