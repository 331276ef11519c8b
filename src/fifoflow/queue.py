"""The client API of the contract: ``Queue`` (push, inspect, cancel, dead letters) and
``Job`` (a handle on one job). Both are thin: input is checked here (``validation``), and
every server call goes through the broker."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .broker import Broker
from .broker_push import BATCH
from .errors import JobFailed, JobNotFound, UsageError
from .keys import Status
from .records import PushSpec
from .resources import validate_need
from .settings import Settings, get_settings
from .validation import (
    EncodedParams,
    encode_params,
    integer,
    seconds,
    validate_alias,
    validate_key,
    validate_name,
    validate_tags,
    validate_target,
)

if TYPE_CHECKING:
    from .schedules_api import Schedules

STATUSES = tuple(s.value for s in Status)
#: fifoflow's own job ids: a 14-hex-digit rank and 4 hex digits of the queue name.
ID_RE = re.compile(r"^[0-9a-f]{18}$")


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

        Wakes when the job reaches a final status (the scripts publish it), with a look
        every second as a safety net. Raises JobFailed if the job ends dead or cancelled,
        TimeoutError if it has not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.queue.broker.finished_ids(self.queue.name) as finished:
            while True:
                record = self.refresh()  # after subscribing: an end cannot slip by
                status = record["status"]
                if status == Status.SUCCEEDED:
                    return record["result"]
                if status in (Status.DEAD, Status.CANCELLED):
                    raise JobFailed(self.id, status, record["error"])
                wait = 1.0
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"job {self.id} is still {status} after {timeout}s")
                    wait = min(wait, left)
                window = time.monotonic() + wait
                while (left := window - time.monotonic()) > 0 and self.id not in finished(left):
                    pass  # other jobs of the queue ended; this one not yet

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
        retries: int | None = None,
        timeout: float | None = None,
        max_lost: int | None = None,
        depends_on: Sequence[str | Job] | None = None,
        gather: bool | str = False,
        on_parent_failure: str = "dead",
        result_ttl: int | None = None,
        job_id: str | None = None,
        resources: Mapping[str, float] | None = None,
        expected_seconds: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Job:
        """Queue one job. ``depends_on``: jobs (or ids, of this queue) that must succeed
        first; it waits (status ``waiting``), then takes its own place in line. With
        ``gather`` it receives their results, in their push order, as ``results``.
        ``job_id``: an id of the caller's choosing, usable wherever an id is (refused if
        taken); fifoflow keeps its own id too, which carries the job's place in line.
        ``retries``/``timeout`` default to ``FIFOFLOW_RETRIES`` (3)/``FIFOFLOW_TIMEOUT_SECONDS``.
        ``resources``: what it needs, e.g. ``{"gpu": 2, "mem_gb": 16, "cpu": 4}`` (default:
        one slot's worth); ``expected_seconds``: how long it expects to run (see
        docs/resources.md). ``tags``: labels of the job (Prefect mode puts them on its
        child flow runs)."""
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
            depends_on=depends_on,
            gather=gather,
            on_parent_failure=on_parent_failure,
            result_ttl=result_ttl,
            job_id=job_id,
            resources=resources,
            expected_seconds=expected_seconds,
            tags=tags,
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
        retries: int | None = None,
        timeout: float | None = None,
        max_lost: int | None = None,
        depends_on: Sequence[str | Job] | None = None,
        gather: bool | str = False,
        on_parent_failure: str = "dead",
        result_ttl: int | None = None,
        job_id: str | None = None,
        on_batch: Callable[[int], object] | None = None,
        resources: Mapping[str, float] | None = None,
        expected_seconds: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[Job]:
        """Queue one job per parameter set, all or none: everything is checked before it is
        sent, and a push of many batches is staged (invisible; each batch encoded while the
        server stages the one before) and becomes visible in one step, so a ``QueueFull``
        (or any error, a bad parameter set among them) means none of its jobs was added.
        Options as ``push``; every job of the push shares them (its parents too)."""
        if on_parent_failure not in ("dead", "run"):
            raise UsageError(
                f"on_parent_failure must be 'dead' or 'run', not {on_parent_failure!r}"
            )
        mode = gather if isinstance(gather, str) else ("results" if gather else "")
        if mode not in ("", "results", "input"):
            raise UsageError(f"gather must be True, False or 'input', not {gather!r}")
        spec = PushSpec(
            target=validate_target(target),
            priority=integer("priority", priority),
            pool=validate_name("pool", pool),
            retries=integer(
                "retries", self.settings.retries if retries is None else retries, minimum=0
            ),
            timeout=seconds(
                "timeout",
                self.settings.timeout_seconds if timeout is None else timeout,
                allow_zero=False,
            ),
            delay=seconds("delay", delay, allow_zero=True),
            max_lost=None if max_lost is None else integer("max_lost", max_lost, minimum=0),
            parents=self._parents(depends_on or ()),
            gather=mode,
            on_parent_failure=on_parent_failure,
            result_ttl=None if result_ttl is None else integer("result_ttl", result_ttl, 1),
            alias=validate_alias(job_id),
            resources=validate_need(resources),
            expected=seconds("expected_seconds", expected_seconds, allow_zero=True),
            tags=validate_tags(tags),
        )
        if mode and not spec.parents:
            raise UsageError("gather needs depends_on: the jobs whose results it gathers")
        sets = list(params_list)
        encoded: Sequence[str]
        if len(sets) > BATCH:  # encoded batch by batch, as they are staged
            encoded = EncodedParams(sets, self.settings.max_params_bytes)
        else:
            encoded = [encode_params(p, self.settings.max_params_bytes) for p in sets]
        if spec.alias is not None and len(encoded) != 1:
            raise UsageError("job_id names one job: push one parameter set with it")
        job_keys = list(keys_) if keys_ is not None else [key] * len(encoded)
        if len(job_keys) != len(encoded):
            raise UsageError("keys_ must have one entry per parameter set")
        job_keys = [validate_key(k) for k in job_keys]
        if not encoded:
            return []
        pushed = self.broker.push(self.name, spec, encoded, job_keys, on_batch)
        return [Job(self, p.id) for p in pushed]

    def _parents(self, depends_on: Sequence[str | Job]) -> tuple[str, ...]:
        """Each parent as QUEUE/ID, in push order (ids sort by push time)."""
        if isinstance(depends_on, str | Job):
            depends_on = [depends_on]
        refs: list[tuple[str, str]] = []
        for parent in depends_on:
            if isinstance(parent, Job):
                refs.append((parent.id, f"{parent.queue.name}/{parent.id}"))
            elif isinstance(parent, str) and parent:
                job_id = parent if ID_RE.match(parent) else self.resolve(parent)
                refs.append((job_id, f"{self.name}/{job_id}"))
            else:
                raise TypeError(f"depends_on takes jobs or job ids, not {parent!r}")
        topology = self.broker.topology
        for _, ref in refs:
            other = ref.split("/", 1)[0]
            if topology.cluster and not topology.same_slot(other, self.name):
                raise UsageError(
                    f"on Redis Cluster a job's parents must be in its own queue "
                    f"({other!r} is in another hash slot than {self.name!r})"
                )
        return tuple(ref for _, ref in sorted(set(refs)))

    def resolve(self, job_id: str) -> str:
        """A job's id from its id or from the id its pusher chose (``job_id=``)."""
        return self.broker.resolve(self.name, job_id)

    def set_max_length(self, max_length: int | None) -> None:
        """Back-pressure: pushes beyond ``max_length`` waiting jobs raise QueueFull."""
        if max_length is not None:
            integer("max_length", max_length, minimum=0)
        self.broker.set_max_length(self.name, max_length)

    # -- inspecting --------------------------------------------------------------------

    def record(self, job_id: str) -> dict[str, Any] | None:
        record = self.broker.record(self.name, job_id)
        if record is None and not ID_RE.match(job_id):  # perhaps an id its pusher chose
            record = self.broker.record(self.name, self.resolve(job_id))
        return record

    def traceback(self, job_id: str) -> str | None:
        return self.broker.traceback(self.name, job_id)

    def job(self, job_id: str) -> Job:
        record = self.record(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return Job(self, record["id"], record)

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
        """True if the job is now cancelled, or running and being stopped (its worker stops
        it and records it cancelled, never retried, unless it succeeds first); False if it
        had already finished."""
        job_id = job_id if ID_RE.match(job_id) else self.resolve(job_id)
        status = self.broker.cancel(self.name, job_id)
        if status == "":
            raise JobNotFound(job_id)
        return status in (Status.CANCELLED, "cancelling")

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.jobs(Status.DEAD, limit)

    def requeue(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Dead jobs (all if None) back to their places in line with fresh retries."""
        return self.broker.requeue(self.name, job_ids)

    def purge_dead(self) -> int:
        return self.broker.purge_dead(self.name)
