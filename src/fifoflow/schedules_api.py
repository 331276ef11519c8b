"""``Schedules``: a queue's schedules, the Python API (``Queue.schedules``; the CLI's
``fifoflow schedule`` is a thin layer over it). Input is checked by ``Spec.create`` before
anything is sent; the schedules live in the server, so every worker started with
``--scheduler`` sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .schedules import DEFAULT_GRACE, Schedule, Spec
from .validation import validate_name

if TYPE_CHECKING:
    from .broker import Broker
    from .queue import Queue


class Schedules:
    """The schedules of one queue: each pushes its target into this queue once per tick."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def __repr__(self) -> str:
        return f"<Schedules of {self.queue.name}>"

    def add(
        self,
        name: str,
        target: str,
        params: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: str | int | None = None,
        timezone: str = "UTC",
        catchup: str = "last",
        grace: str | int = DEFAULT_GRACE,
        param: str | None = None,
        pool: str = "default",
        priority: int = 0,
        retries: int = 3,
        timeout: float | None = None,
    ) -> Schedule:
        """A new schedule (``cron`` or ``every``, e.g. ``"*/5 * * * *"`` or ``"10m"``). Its
        first tick is the first one after now. ``param``: a parameter that gets each tick's
        time (ISO 8601 in ``timezone``). ``grace``: how late a tick may fire and still be on
        time; older ones were missed, and ``catchup`` (none, last, all) decides. A name the
        queue already has is refused (``UsageError``), and nothing changes."""
        validate_name("schedule", name)
        spec = Spec.create(
            target,
            params,
            cron=cron,
            every=every,
            timezone=timezone,
            catchup=catchup,
            grace=grace,
            param=param,
            pool=pool,
            priority=priority,
            retries=retries,
            timeout=timeout,
            max_params_bytes=self.queue.settings.max_params_bytes,
        )
        if not self.queue.broker.add_schedule(self.queue.name, name, spec.to_json()):
            raise UsageError(f"queue {self.queue.name!r} already has a schedule named {name!r}")
        return self.get(name)

    def get(self, name: str) -> Schedule:
        raw = self.queue.broker.schedule(self.queue.name, validate_name("schedule", name))
        if raw is None:
            raise UsageError(f"queue {self.queue.name!r} has no schedule named {name!r}")
        return Schedule.from_hash(self.queue.name, name, raw)

    def list(self) -> list[Schedule]:
        return of_queue(self.queue.broker, self.queue.name)

    def pause(self, name: str) -> Schedule:
        """No tick fires until ``resume``."""
        return self._pause(name, True)

    def resume(self, name: str) -> Schedule:
        """Ticks fire again from the next one on; those due while paused never fire."""
        return self._pause(name, False)

    def _pause(self, name: str, paused: bool) -> Schedule:
        validate_name("schedule", name)
        if not self.queue.broker.pause_schedule(self.queue.name, name, paused):
            raise UsageError(f"queue {self.queue.name!r} has no schedule named {name!r}")
        return self.get(name)

    def remove(self, name: str) -> None:
        validate_name("schedule", name)
        if not self.queue.broker.remove_schedule(self.queue.name, name):
            raise UsageError(f"queue {self.queue.name!r} has no schedule named {name!r}")


def of_queue(broker: Broker, queue: str) -> list[Schedule]:
    return [Schedule.from_hash(queue, n, raw) for n, raw in broker.schedules(queue).items()]


def every_schedule(broker: Broker) -> list[Schedule]:
    """The schedules of every queue."""
    return [s for q in broker.schedule_queues() for s in of_queue(broker, q)]
