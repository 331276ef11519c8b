"""The client API of the contract: ``Queue`` (push, inspect, cancel, dead letters) and
``Job`` (a handle on one job). Both are thin: input is checked here (``validation``), and
every server call goes through the broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .broker import Broker
from .errors import JobFailed, JobNotFound, UsageError
from .keys import Status
from .records import PushSpec
from .settings import Settings, get_settings
from .validation import (
    encode_params,
    integer,
    seconds,
    validate_key,
    validate_name,
    validate_target,
)

if TYPE_CHECKING:
    from .schedules_api import Schedules

STATUSES = tuple(s.value for s in Status)


class Job:
    """A handle on one job; attribute reads of ``status`` go to the server."""

    def __init__(self, queue: Queue, job_id: str, record: dict[str, Any] | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self._record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.queue.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.queue.name, other.id) == (self.queue.name, self.id)

    def __hash__(self) -> int:
        return hash((self.queue.name, self.id))

    def refresh(self) -> dict[str, Any]:
        record = self.queue.record(self.id)
        if record is None:
            raise JobNotFound(self.id)
        self._record = record
        return record

    def to_dict(self) -> dict[str, Any]:
        return dict(self.refresh())

    @property
    def status(self) -> str:
        return str(self.refresh()["status"])

    def __getattr__(self, name: str) -> Any:
        # Every other field of the record (attempts, error, worker, ...), fresh from the server.
        if name.startswith("_"):
            raise AttributeError(name)
        record = self.refresh()
        if name in record:
            return record[name]
        raise AttributeError(name)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its value.

        Polls with a growing interval (5 ms up to 200 ms): cheap for the server, quick for
        short jobs. Raises JobFailed if the job ends dead or cancelled, TimeoutError if it
        has not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            record = self.refresh()
            status = record["status"]
            if status == Status.SUCCEEDED:
                return record["result"]
            if status in (Status.DEAD, Status.CANCELLED):
                raise JobFailed(self.id, status, record["error"])
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {self.id} is still {status} after {timeout}s")
                delay = min(delay, left)
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def cancel(self) -> bool:
        return self.queue.cancel(self.id)


class Queue:
    """One named queue on one server. Cheap to create; share it between threads."""

    def __init__(
        self,
        name: str | None = None,
        url: str | None = None,
        *,
        broker: Broker | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or (broker.settings if broker else get_settings())
        self.name = validate_name("queue", self.settings.queue if name is None else name)
        self.broker = broker or Broker.connect(url, settings=self.settings)

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for tests and tools that inspect keys)."""
        return self.broker.client

    def close(self) -> None:
        self.broker.close()

    @property
    def schedules(self) -> Schedules:
        """The queue's schedules: add, list, pause, resume, remove."""
        from .schedules_api import Schedules

        return Schedules(self)

    # -- producing ---------------------------------------------------------------------

    def push(
        self,
        target: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        pool: str = "default",
        key: str | None = None,
        delay: float | None = None,
        retries: int = 3,
        timeout: float | None = None,
        max_lost: int | None = None,
    ) -> Job:
        return self.push_many(
            target,
            [params],
            priority=priority,
            pool=pool,
            key=key,
            delay=delay,
            retries=retries,
            timeout=timeout,
            max_lost=max_lost,
        )[0]

    def push_many(
        self,
        target: str,
        params_list: Iterable[Mapping[str, Any] | None],
        *,
        priority: int = 0,
        pool: str = "default",
        key: str | None = None,
        keys_: Sequence[str | None] | None = None,
        delay: float | None = None,
        retries: int = 3,
        timeout: float | None = None,
        max_lost: int | None = None,
        on_batch: Callable[[int], object] | None = None,
    ) -> list[Job]:
        """Queue one job per parameter set, all or none: everything is checked before
        anything is sent, and a push of many batches becomes visible in one step, so a
        ``QueueFull`` (or any error) means none of its jobs was added."""
        spec = PushSpec(
            target=validate_target(target),
            priority=integer("priority", priority),
            pool=validate_name("pool", pool),
            retries=integer("retries", retries, minimum=0),
            timeout=seconds("timeout", timeout, allow_zero=False),
            delay=seconds("delay", delay, allow_zero=True),
            max_lost=None if max_lost is None else integer("max_lost", max_lost, minimum=0),
        )
        encoded = [encode_params(p, self.settings.max_params_bytes) for p in params_list]
        job_keys = list(keys_) if keys_ is not None else [key] * len(encoded)
        if len(job_keys) != len(encoded):
            raise UsageError("keys_ must have one entry per parameter set")
        job_keys = [validate_key(k) for k in job_keys]
        if not encoded:
            return []
        pushed = self.broker.push(self.name, spec, encoded, job_keys, on_batch)
        return [Job(self, p.id) for p in pushed]

    def set_max_length(self, max_length: int | None) -> None:
        """Back-pressure: pushes beyond ``max_length`` waiting jobs raise QueueFull."""
        if max_length is not None:
            integer("max_length", max_length, minimum=0)
        self.broker.set_max_length(self.name, max_length)

    # -- inspecting --------------------------------------------------------------------

    def record(self, job_id: str) -> dict[str, Any] | None:
        return self.broker.record(self.name, job_id)

    def traceback(self, job_id: str) -> str | None:
        return self.broker.traceback(self.name, job_id)

    def job(self, job_id: str) -> Job:
        record = self.record(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return Job(self, job_id, record)

    def stats(self) -> dict[str, int]:
        """The contract's counts per status (``fifoflow status``)."""
        return self.broker.counts(self.name)

    def pools(self) -> list[str]:
        return self.broker.pools(self.name)

    def job_ids(self, status: str | None = None) -> list[str]:
        return self.broker.job_ids(self.name, status)

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        ids = self.job_ids(status)
        if limit is not None:
            ids = ids[:limit]
        return self.broker.records(self.name, ids)

    # -- changing ----------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """True if the job is now cancelled; False if it had already started or finished."""
        status = self.broker.cancel(self.name, job_id)
        if status == "":
            raise JobNotFound(job_id)
        return status == Status.CANCELLED

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.jobs(Status.DEAD, limit)

    def requeue(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Dead jobs (all if None) back to their places in line with fresh retries."""
        return self.broker.requeue(self.name, job_ids)

    def purge_dead(self) -> int:
        return self.broker.purge_dead(self.name)
