"""The queue: push, claim, complete (ack / retry / dead), leases, cancel, dead letters.

Each method that changes more than one key is one Lua script (``scripts/*.lua``), so every
state change is atomic on the server. ``Queue`` is both the producer API of the contract
and the broker API the worker drives (``claim``, ``complete``, ``extend``, ``release``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from . import keys, scripts
from .connection import connect
from .errors import JobFailed, JobNotFound, QueueFull, UsageError
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

TARGET_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
STATUSES = ("queued", "delayed", "running", "succeeded", "dead", "cancelled")
#: push_many sends jobs in batches of this size; each batch is one atomic script call.
BATCH = 5000
MAX_KEY_LENGTH = 512
CLAIM_FIELDS = 6


def validate_target(target: object) -> str:
    if not isinstance(target, str) or not TARGET_RE.match(target):
        raise UsageError(f"invalid target {target!r}: expected 'package.module:function'")
    return target


def validate_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not keys.valid_name(name):
        raise UsageError(f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    return name


def encode_params(params: object, max_bytes: int) -> str:
    """JSON object text of ``params``; never pickle. TypeError/ValueError name the problem."""
    if params is None:
        return "{}"
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a JSON object (a dict), not {type(params).__name__}")
    if not all(isinstance(k, str) for k in params):
        raise TypeError("params keys must be strings (they become keyword arguments)")
    try:
        text = json.dumps(params, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise type(e)(f"params are not JSON: {e}") from None
    except RecursionError:
        raise ValueError("params are not JSON: nested too deeply") from None
    _check_keys(params)
    if len(text.encode()) > max_bytes:
        raise UsageError(f"params are {len(text.encode())} bytes of JSON; the limit is {max_bytes}")
    return text


def _check_keys(params: Mapping[str, Any]) -> None:
    """JSON would silently turn nested non-string keys into strings ({1: 2} -> {"1": 2}),
    so the target would get other params than were pushed: refuse them. Runs after a
    successful dump, so the structure is finite and acyclic."""
    stack: list[object] = list(params.values())
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise TypeError("params keys must be strings at every level, as JSON has them")
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def _int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, not {value}")
    return value


def _seconds(name: str, value: object, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


@dataclass(slots=True)
class Claimed:
    """A job as handed to a worker: enough to run it and to report on it."""

    queue: str
    id: str
    token: str
    target: str
    params: str
    timeout: float | None
    attempts: int


@dataclass(slots=True)
class Completion:
    outcome: str  # succeeded | retry | dead | stale
    next_event: float  # seconds until something is due (-1: nothing scheduled)
    claimed: list[Claimed]


def _parse_claimed(queue: str, flat: Sequence[str]) -> list[Claimed]:
    return [
        Claimed(
            queue=queue,
            id=flat[i],
            token=flat[i + 1],
            target=flat[i + 2],
            params=flat[i + 3],
            timeout=float(flat[i + 4]) if flat[i + 4] else None,
            attempts=int(flat[i + 5]),
        )
        for i in range(0, len(flat), CLAIM_FIELDS)
    ]


def _load_json(text: str | None) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)


def _float(text: str | None) -> float | None:
    return float(text) if text else None


def job_record(queue: str, job_id: str, raw: Mapping[str, str]) -> dict[str, Any]:
    """The contract's job object from a stored hash (plus a few extra fields)."""
    return {
        "id": job_id,
        "queue": queue,
        "target": raw.get("target"),
        "params": _load_json(raw.get("params")),
        "priority": int(raw.get("priority", 0)),
        "pool": raw.get("pool", "default"),
        "key": raw.get("key") or None,
        "retries": int(raw.get("retries", 0)),
        "timeout": _float(raw.get("timeout")),
        "status": raw.get("status", "queued"),
        "attempts": int(raw.get("attempts", 0)),
        "created_at": _float(raw.get("created_at")),
        "started_at": _float(raw.get("started_at")),
        "finished_at": _float(raw.get("finished_at")),
        "worker": raw.get("worker") or None,
        "result": _load_json(raw.get("result")),
        "error": raw.get("error") or None,
        "due_at": _float(raw.get("due_at")) if raw.get("status") == "delayed" else None,
        "flow_run_id": raw.get("flow_run_id") or None,
    }


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
            if status == "succeeded":
                return record["result"]
            if status in ("dead", "cancelled"):
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
        client: redis.Redis | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.name = validate_name("queue", self.settings.queue if name is None else name)
        self.client: redis.Redis = client or connect(url)
        self._prefix = keys.prefix(self.name)
        self._suffix = keys.id_suffix(self.name)
        self._registered = False
        self._retry_args = (
            repr(self.settings.retry_base_seconds),
            repr(self.settings.retry_max_seconds),
        )

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    def close(self) -> None:
        self.client.close()

    # -- producing ---------------------------------------------------------------

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
        on_batch: Callable[[int], object] | None = None,
    ) -> list[Job]:
        """Queue one job per parameter set. Validates everything before sending anything;
        each batch of ``BATCH`` jobs is one atomic call. The first batch checks the whole
        push against ``max_length``, so a push that does not fit adds nothing."""
        validate_target(target)
        validate_name("pool", pool)
        _int("priority", priority)
        _int("retries", retries, minimum=0)
        delay_s = _seconds("delay", delay, allow_zero=True)
        timeout_s = _seconds("timeout", timeout, allow_zero=False)
        encoded = [encode_params(p, self.settings.max_params_bytes) for p in params_list]
        job_keys = list(keys_) if keys_ is not None else [key] * len(encoded)
        if len(job_keys) != len(encoded):
            raise UsageError("keys_ must have one entry per parameter set")
        for k in job_keys:
            if k is not None and (not isinstance(k, str) or not 0 < len(k) <= MAX_KEY_LENGTH):
                raise UsageError(
                    f"key must be a non-empty string of at most {MAX_KEY_LENGTH} chars"
                )
        if not encoded:
            return []
        common = [
            str(priority),
            pool,
            "",
            str(retries),
            "" if timeout_s is None else repr(timeout_s),
            "" if delay_s is None else repr(delay_s),
        ]
        self._register_queue()
        jobs: list[Job] = []
        for start in range(0, len(encoded), BATCH):
            chunk = encoded[start : start + BATCH]
            later = len(encoded) - start - len(chunk)
            args: list[Any] = [self._suffix, str(len(chunk)), str(later)]
            for i, params in enumerate(chunk):
                fields = list(common)
                fields[2] = job_keys[start + i] or ""
                args += [target, params, *fields]
            reply = scripts.call(self.client, "push", self._prefix, *args)
            if reply[0] == "FULL":
                raise QueueFull(self.name, int(reply[1]), int(reply[2]), int(reply[3]))
            jobs += [Job(self, reply[i]) for i in range(1, len(reply), 3)]
            if on_batch is not None:
                on_batch(len(chunk))
        return jobs

    def _register_queue(self) -> None:
        if not self._registered:
            self.client.sadd(keys.QUEUES, self.name)
            self._registered = True

    def set_max_length(self, max_length: int | None) -> None:
        """Back-pressure: pushes beyond ``max_length`` waiting jobs raise QueueFull."""
        if max_length is None:
            self.client.hdel(keys.meta(self.name), "max_length")
        else:
            _int("max_length", max_length, minimum=0)
            self.client.hset(keys.meta(self.name), "max_length", str(max_length))

    # -- working (the worker's side) -----------------------------------------------

    def claim(
        self, worker: str, n: int, pools: Sequence[str], lease: float
    ) -> tuple[float, list[Claimed]]:
        reply = scripts.call(self.client, "claim", self._prefix, worker, repr(lease), n, *pools)
        return self.parse_claim(reply)

    def claim_command(
        self, worker: str, n: int, pools: Sequence[str], lease: float
    ) -> tuple[Any, ...]:
        """The raw EVALSHA of a claim, for a caller that pipelines it behind a BLPOP."""
        return ("EVALSHA", scripts.sha("claim"), 1, self._prefix, worker, repr(lease), n, *pools)

    def parse_claim(self, reply: Sequence[str]) -> tuple[float, list[Claimed]]:
        return float(reply[0]), _parse_claimed(self.name, reply[1:])

    def complete(
        self,
        job: Claimed,
        outcome: str,
        payload: str,
        *,
        traceback: str = "",
        extra: tuple[str, str] = ("", ""),
        claim: tuple[str, int, Sequence[str], float] | None = None,
        conn: redis.Connection | None = None,
    ) -> Completion:
        """Ack (``ok``) or fail (``fail`` retries if it may, ``dead`` never) one attempt,
        and claim the next jobs for ``(worker, n, pools, lease)`` in the same round trip.
        ``conn``: a connection the calling thread owns (a worker slot's), else the pool's."""
        worker, n, pools, lease = claim or ("", 0, (), 0.0)
        args = (
            job.id,
            job.token,
            outcome,
            payload,
            traceback,
            *self._retry_args,
            "1" if outcome == "ok" else repr(random.uniform(0.5, 1.0)),
            self.settings.result_ttl_seconds,
            extra[0],
            extra[1],
            worker,
            repr(lease),
            n,
            *pools,
        )
        if conn is None:
            reply = scripts.call(self.client, "complete", self._prefix, *args)
        else:
            reply = scripts.call_on(conn, "complete", self._prefix, *args)
        return Completion(reply[0], float(reply[1]), _parse_claimed(self.name, reply[2:]))

    def extend(self, jobs: Sequence[Claimed], lease: float) -> list[str]:
        """Renew leases; returns the ids whose lease was lost to another worker."""
        if not jobs:
            return []
        args: list[str] = [repr(lease)]
        for j in jobs:
            args += [j.id, j.token]
        return list(scripts.call(self.client, "extend", self._prefix, *args))

    def release(self, jobs: Sequence[Claimed]) -> int:
        """Put claimed jobs back at their original places (graceful stop)."""
        if not jobs:
            return 0
        args: list[str] = []
        for j in jobs:
            args += [j.id, j.token]
        return int(scripts.call(self.client, "release", self._prefix, *args))

    def maintain(self) -> tuple[int, int, int]:
        """Promote due, reap expired, trim old records: (promoted, reaped, trimmed)."""
        ttl = self.settings.result_ttl_seconds
        p, r, t = scripts.call(self.client, "maintain", self._prefix, ttl)
        return int(p), int(r), int(t)

    def pools(self) -> list[str]:
        return sorted(str(p) for p in self.client.smembers(keys.pools(self.name)))

    def wake_keys(self, pools: Sequence[str]) -> list[str]:
        return [keys.wake(self.name, p) for p in pools]

    # -- inspecting ------------------------------------------------------------------

    def record(self, job_id: str) -> dict[str, Any] | None:
        raw = cast(dict[str, str], self.client.hgetall(keys.job(self.name, job_id)))
        return job_record(self.name, job_id, raw) if raw else None

    def traceback(self, job_id: str) -> str | None:
        tb = self.client.hget(keys.job(self.name, job_id), "traceback")
        return str(tb) if tb else None

    def job(self, job_id: str) -> Job:
        record = self.record(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return Job(self, job_id, record)

    def stats(self) -> dict[str, int]:
        """Counts per status, each an O(1) ZCARD (queued: one per pool)."""
        self.maintain()
        pools = self.pools()
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(self.name, p))
        for z in ("delayed", "retry", "running", "succeeded", "dead", "cancelled"):
            pipe.zcard(keys.zset(self.name, z))
        counts = pipe.execute()
        queued = sum(counts[: len(pools)])
        delayed, retry, running, succeeded, dead, cancelled = counts[len(pools) :]
        return {
            "queued": queued,
            "delayed": delayed + retry,
            "running": running,
            "succeeded": succeeded,
            "dead": dead,
            "cancelled": cancelled,
        }

    def retrying(self) -> int:
        return int(self.client.zcard(keys.zset(self.name, "retry")))

    def ready_count(self, pools: Sequence[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for p in pools:
            pipe.zcard(keys.ready(self.name, p))
        return sum(pipe.execute())

    def job_ids(self, status: str | None = None) -> list[str]:
        """Ids with a status (all if None), oldest first (ids sort by creation)."""
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        sets: list[str] = []
        if status in (None, "queued"):
            sets += [keys.ready(self.name, p) for p in self.pools()]
        if status in (None, "delayed"):
            sets += [keys.zset(self.name, "delayed"), keys.zset(self.name, "retry")]
        for s in ("running", "succeeded", "dead", "cancelled"):
            if status in (None, s):
                sets.append(keys.zset(self.name, s))
        pipe = self.client.pipeline(transaction=False)
        for z in sets:
            pipe.zrange(z, 0, -1)
        return sorted({i for ids in pipe.execute() for i in ids})

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        ids = self.job_ids(status)
        if limit is not None:
            ids = ids[:limit]
        pipe = self.client.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.job(self.name, i))
        return [
            job_record(self.name, i, raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw
        ]

    # -- changing ----------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """True if the job is now cancelled; False if it had already started or finished."""
        ttl = self.settings.result_ttl_seconds
        status = scripts.call(self.client, "cancel", self._prefix, job_id, ttl)
        if status == "":
            raise JobNotFound(job_id)
        return bool(status == "cancelled")

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.jobs("dead", limit)

    def requeue(self, job_ids: Sequence[str] | None = None) -> list[str]:
        """Dead jobs (all if None) back to their places in line with fresh retries."""
        # "*" is the script's "every dead job": as an id it is just an unknown one.
        args = [i for i in job_ids if i != "*"] if job_ids is not None else ["*"]
        if not args:
            return []
        return list(scripts.call(self.client, "requeue", self._prefix, *args))

    def purge_dead(self) -> int:
        return int(scripts.call(self.client, "purge", self._prefix))


def known_queues(client: redis.Redis) -> list[str]:
    return sorted(str(q) for q in client.smembers(keys.QUEUES))
