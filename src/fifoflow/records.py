"""Typed records that cross the broker boundary: what a push, a claim and a report carry,
and the contract's job object built from a stored hash."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .keys import DEFAULT_POOL, DEFAULT_RETRIES, Field, Status

#: Seeded from the OS once per process: a nonce per claim would otherwise cost a syscall.
_random = random.Random(int.from_bytes(os.urandom(32), "big"))


def nonce() -> str:
    """64 random bits: a fencing token no other claim, on any worker, will have."""
    return f"{_random.getrandbits(64):016x}"


#: Fields per claimed job in a script's reply: id, target, params, timeout, attempts,
#: gather mode, gathered results, share of resources, tags, when it entered the line.
CLAIM_FIELDS = 10

OutcomeKind = Literal["ok", "fail", "dead"]
#: A report's outcomes that end the job (``Completion.outcome``).
FINAL = ("succeeded", "dead")


@dataclass(slots=True, frozen=True)
class PushSpec:
    """What every job of one push shares."""

    target: str
    priority: int = 0
    pool: str = "default"
    retries: int = 3
    timeout: float | None = None
    delay: float | None = None
    max_lost: int | None = None
    #: "QUEUE/ID" of each parent, in push order.
    parents: tuple[str, ...] = ()
    gather: str = ""  # '' | 'results' | 'input'
    on_parent_failure: str = "dead"  # 'dead' | 'run'
    result_ttl: int | None = None
    alias: str | None = None
    #: What each job needs, as JSON object text ('' = one slot's worth); see resources.py.
    resources: str = ""
    #: Seconds each job expects to run (a blocked head's reservation counts on it).
    expected: float | None = None
    #: Labels of the jobs (Prefect mode puts them on the child flow runs).
    tags: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """In the order of ``push_spec`` in ``_common.lua`` (``SPEC_LEN`` of them)."""
        return [
            self.target,
            str(self.priority),
            self.pool,
            str(self.retries),
            "" if self.timeout is None else repr(self.timeout),
            "" if self.delay is None else repr(self.delay),
            "" if self.max_lost is None else str(self.max_lost),
            ",".join(self.parents),
            self.gather,
            self.on_parent_failure,
            "" if self.result_ttl is None else str(self.result_ttl),
            self.alias or "",
            self.resources,
            "" if self.expected is None else repr(self.expected),
            json.dumps(list(self.tags)) if self.tags else "",
        ]


@dataclass(slots=True)  # not frozen: a bulk push makes one per job, and frozen costs 60 %
class Pushed:
    id: str
    new: bool  # False: an active job with the same key was returned instead
    status: str


@dataclass(slots=True)
class ClaimRequest:
    """Who claims how many jobs from which pools. ``nonce`` (random, chosen by the worker)
    becomes the fencing token of every job claimed and makes the request idempotent."""

    worker: str
    n: int
    pools: Sequence[str]
    lease: float
    nonce: str
    #: Leave a wake token for jobs still ready (the dispatcher's claims after a wake-up).
    refill: bool = False
    #: The worker declared capacity: the server picks by resources (_resources.lua).
    resources: bool = False


@dataclass(slots=True)
class Claimed:
    """A job as handed to a worker: enough to run it and to report on it."""

    queue: str
    id: str
    token: str
    target: str
    params: str  # JSON object text
    timeout: float | None
    attempts: int
    gather: str = ""  # '' | 'results' | 'input': how its parents' results reach it
    gathered: str = ""  # their results, a JSON array text
    #: Its share of the worker's resources, JSON ('' if none): {"need": .., "gpu_ids": ..}
    alloc: str = ""
    tags: str = ""  # the job's tags, a JSON array text ('' = none)
    queued_at: float | None = None  # when it last entered the line (Unix seconds)

    def tag_list(self) -> list[str]:
        return list(json.loads(self.tags)) if self.tags else []


@dataclass(slots=True)
class Claim:
    next_event: float  # seconds until something is due (-1: nothing scheduled)
    jobs: list[Claimed]


@dataclass(slots=True)
class Outcome:
    """The end of one attempt: ``ok`` with the result's JSON, or ``fail`` (retried while
    retries are left) / ``dead`` (never retried) with a one-line error."""

    kind: OutcomeKind
    payload: str
    traceback: str = ""
    #: More fields to record on the job (e.g. ``flow_run_id``), whatever the outcome.
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Retry:
    """A failed attempt's retry, as the server scheduled it."""

    number: int  # this is the job's NUMBER-th retry ...
    of: int  # ... of the OF it may have
    delay: float  # seconds from now

    @classmethod
    def parse(cls, text: str) -> Retry | None:
        if not text:
            return None
        number, of, delay = text.split("/")
        return cls(int(number), int(of), float(delay))


@dataclass(slots=True)
class Completion:
    outcome: str  # succeeded | retry | dead | cancelled | stale
    next_event: float
    claimed: list[Claimed]
    retry: Retry | None = None  # when the outcome is 'retry'


def attempt_line(job: Claimed, outcome: Outcome, done: Completion, seconds: float) -> str:
    """The worker's log line for one reported attempt, e.g. ``job X mod:f failed after
    0.4s; retry 1/3 in 0.8s: ValueError: boom`` (the run time, then the retry's own delay)."""
    head = f"job {job.id} {job.target}"
    error = f": {outcome.payload}" if outcome.kind != "ok" else ""
    if done.outcome == "stale":
        return f"{head} ended after {seconds:.3f}s, but its lease had passed to another worker"
    if done.outcome == Status.SUCCEEDED:
        return f"{head} succeeded in {seconds:.3f}s"
    if done.outcome == Status.CANCELLED:
        return f"{head} cancelled after {seconds:.3f}s, never retried{error}"
    if done.retry is not None:
        r = done.retry
        return (
            f"{head} failed after {seconds:.3f}s; retry {r.number}/{r.of} in {r.delay:.1f}s{error}"
        )
    why = "no retry" if outcome.kind == "dead" else "no retries left"
    return f"{head} failed after {seconds:.3f}s; dead ({why}){error}"


def parse_claimed(queue: str, token: str, flat: Sequence[str]) -> list[Claimed]:
    return [
        Claimed(
            queue=queue,
            id=flat[i],
            token=token,
            target=flat[i + 1],
            params=flat[i + 2],
            timeout=float(flat[i + 3]) if flat[i + 3] else None,
            attempts=int(flat[i + 4]),
            gather=flat[i + 5],
            gathered=flat[i + 6],
            alloc=flat[i + 7],
            tags=flat[i + 8],
            queued_at=float(flat[i + 9]) if flat[i + 9] else None,
        )
        for i in range(0, len(flat), CLAIM_FIELDS)
    ]


def _load_json(text: str | None) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)


def _float(text: str | None) -> float | None:
    return float(text) if text else None


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def created_at(job_id: str, raw: Mapping[str, str]) -> float | None:
    """When a job was pushed: its rank (the first 14 hex digits of its id) is the server's
    time in microseconds then; pushes store no separate field (records of older versions
    do, and it wins)."""
    stored = raw.get(Field.CREATED_AT)
    if stored:
        return float(stored)
    try:
        return int(job_id[:14], 16) / 1_000_000
    except ValueError:
        return None


def job_record(queue: str, job_id: str, raw: Mapping[str, str]) -> dict[str, Any]:
    """The contract's job object from a stored hash (plus a few extra fields)."""
    status = raw.get(Field.STATUS, Status.QUEUED)
    return {
        "id": job_id,
        "queue": queue,
        "target": raw.get(Field.TARGET),
        "params": _load_json(raw.get(Field.PARAMS)),
        "priority": int(raw.get(Field.PRIORITY, 0)),
        "pool": raw.get(Field.POOL, DEFAULT_POOL),
        "key": raw.get(Field.KEY) or None,
        "retries": int(raw.get(Field.RETRIES, DEFAULT_RETRIES)),
        "timeout": _float(raw.get(Field.TIMEOUT)),
        "status": status,
        "attempts": int(raw.get(Field.ATTEMPTS, 0)),
        "created_at": created_at(job_id, raw),
        "started_at": _float(raw.get(Field.STARTED_AT)),
        "finished_at": _float(raw.get(Field.FINISHED_AT)),
        "worker": raw.get(Field.WORKER) or None,
        "result": _load_json(raw.get(Field.RESULT)),
        "error": raw.get(Field.ERROR) or None,
        "due_at": _float(raw.get(Field.DUE_AT)) if status == Status.DELAYED else None,
        "lost": int(raw.get(Field.LOST, 0)),
        "max_lost": _int(raw.get(Field.MAX_LOST)),
        "claim_seq": _int(raw.get(Field.CLAIM_SEQ)),
        "depends_on": [ref.split("/", 1)[1] for ref in raw[Field.PARENTS].split(",")]
        if raw.get(Field.PARENTS)
        else [],
        "alias": raw.get(Field.ALIAS) or None,
        "resources": _load_json(raw.get(Field.RESOURCES)),
        "expected_seconds": _float(raw.get(Field.EXPECTED)),
        "alloc": _load_json(raw.get(Field.ALLOC)) if status == Status.RUNNING else None,
        "flow_run_id": raw.get(Field.FLOW_RUN_ID) or None,
        "tags": _load_json(raw.get(Field.TAGS)) or [],
    }
