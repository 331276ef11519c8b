"""The Redis key schema, job statuses and job fields: the one definition of each.

Every key of one queue starts with ``ff:{QUEUE}:`` so all of them hash to one slot (the
``{QUEUE}`` hash tag) and a Lua script can touch any of them, on a single server or on
Redis Cluster. The scripts say ``S.queued``, ``F.status``, ``K.ready``: ``scripts.py``
replaces each with its value from the enums below when it loads them.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

#: Queue and pool names: printable, no braces (they would break the hash tag), no colons.
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

#: Set of every queue name that has ever been pushed to (its own slot, never in a script).
QUEUES = "ff:queues"
#: Sorted set of live worker names, scored by their last heartbeat.
WORKERS = "ff:workers"
#: Which worker currently watches for dead workers (a short-lived lock, see deathwatch).
WATCHER = "ff:watcher"
#: Set of every queue name that has schedules (its own slot, never in a script).
SCHEDULES = "ff:schedules"
#: Prefix of every worker connection's CLIENT SETNAME: how a dead worker is recognised.
CONNECTION_NAME_PREFIX = "ffw:"


class Status(StrEnum):
    """A job's status (the contract's names)."""

    QUEUED = "queued"
    WAITING = "waiting"  # for its parents (depends_on) to finish
    DELAYED = "delayed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: Statuses after which a job never runs again; each has a sorted set of the same name.
FINAL = (Status.SUCCEEDED, Status.DEAD, Status.CANCELLED)


class Field(StrEnum):
    """The fields of a job's hash (``ff:{Q}:job:ID``)."""

    TARGET = "target"
    PARAMS = "params"  # JSON object text
    PRIORITY = "priority"
    POOL = "pool"
    KEY = "key"  # de-duplication key, if any
    RETRIES = "retries"
    MAX_LOST = "max_lost"  # the job's own limit of lost leases, if it set one
    TIMEOUT = "timeout"
    STATUS = "status"
    ATTEMPTS = "attempts"
    FAILURES = "failures"
    LOST = "lost"  # leases lost (worker died or was cut off)
    CREATED_AT = "created_at"  # not stored by pushes (the id's rank is the push time); old records
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    DUE_AT = "due_at"
    WORKER = "worker"
    TOKEN = "token"  # fencing token of the current claim ('' when not running)
    DONE = "done"  # "TOKEN|OUTCOME" of the last reported attempt: a re-sent report is a no-op
    CLAIM_SEQ = "claim_seq"  # the queue's claim counter when this attempt was claimed
    RESULT = "result"
    ERROR = "error"
    TRACEBACK = "traceback"
    FLOW_RUN_ID = "flow_run_id"
    QUEUED_AT = "queued_at"  # when it last entered a ready set (queue wait starts)
    PARENTS = "parents"  # "QUEUE/ID,..." it depends on, in push order
    WAITING_ON = "waiting_on"  # parents still to finish
    GATHER = "gather"  # '' | 'results' | 'input': how its parents' results reach it
    ON_PARENT_FAILURE = "on_parent_failure"  # 'dead' (default) | 'run'
    CHILDREN = "children"  # '1' once a job depends on it
    RESULT_TTL = "result_ttl"  # its own ttl of the finished record, if it set one
    ALIAS = "alias"  # the id its pusher chose, if any
    CANCEL = "cancel"  # '1' once a cancel was asked while it ran: it ends cancelled
    RESOURCES = "resources"  # JSON object: what it needs, e.g. {"gpu": 2} ('' = one slot)
    EXPECTED = "expected"  # seconds it expects to run (the head's reservation), if declared
    ALLOC = "alloc"  # JSON: its share while it runs: {"need": {...}, "gpu_ids": [...]}
    TAGS = "tags"  # JSON array of the job's tags (Prefect mode: on its child flow runs)


class Key(StrEnum):
    """Suffixes of a queue's keys, after its prefix ``ff:{Q}:``."""

    JOB = "job:"  # + id: hash, the job record
    READY = "ready:"  # + pool: zset of claimable jobs, score -priority, member id
    WAKE = "wake:"  # + pool: list of wake tokens idle workers BLPOP
    POOLS = "pools"  # set of pools seen
    DELAYED = "delayed"  # zset, pushed with a delay, score = due time
    RETRY = "retry"  # zset, waiting for a retry, score = due time
    RUNNING = "running"  # zset, claimed, score = lease deadline
    SUCCEEDED = "succeeded"  # zset, finished, score = finish time (likewise dead, cancelled)
    DEAD = "dead"
    CANCELLED = "cancelled"
    KEYS = "keys"  # hash, de-duplication key -> id while queued, delayed or running
    SEQ = "seq"  # string, the last rank handed out
    CLAIMS = "claims"  # string, the claim counter (claim_seq)
    HK = "hk"  # string, housekeeping gate (expires after 50 ms)
    META = "meta"  # hash, queue settings (max_length)
    REQ = "req:"  # + request nonce: the reply of a request already done (idempotence)
    STAGE = "stage:"  # + push id: list of "FIRST_ID COUNT", a run per staged batch
    STAGING = "staging"  # zset, push ids being staged, score = start time (for clean-up)
    STATS = "stats"  # hash, monotonic counters: EVENT:POOL -> count
    HIST = "hist"  # hash, histograms: NAME:POOL:BUCKET -> count, NAME_us:POOL -> sum (µs)
    EVENTS = "events"  # stream, the last attempts (capped): the dashboard's timeline
    ALL = "all"  # zset, every job, score = its rank (push time), for listings newest first
    WAITING = "waiting"  # zset, jobs waiting for parents, score = rank
    CHILDREN = "children:"  # + id: set of "QUEUE/ID" of the jobs waiting on it
    GATHERED = "gathered:"  # + id: hash, parent id -> its result, for a gathering job
    ALIASES = "aliases"  # hash, a caller-chosen id -> the job's id
    DONE = "done"  # pub/sub channel: the id of each job reaching a final status
    DONE_BY = "done_by"  # hash, worker name -> attempts it finished (recorded by complete.lua)
    CANCELS = "cancels"  # pub/sub channel: the id of each running job asked to cancel
    SCHEDULES = "schedules"  # set, the names of the queue's schedules
    SCHEDULE = "schedule:"  # + name: hash, a schedule (ScheduleField)
    ONCE = "once"  # zset, once-keys ever pushed (backfills), score = push time
    CAPACITY = "capacity"  # zset, live resource workers, score = when their record expires
    CAP = "cap:"  # + worker: hash, its capacity (JSON), GPU ids, pools, host, strict flag
    HELD = "held:"  # + worker: set, ids it claimed with resources (stale ones dropped lazily)


class ScheduleField(StrEnum):
    """The fields of a schedule's hash (``ff:{Q}:schedule:NAME``); ``H.name`` in scripts."""

    SPEC = "spec"  # JSON: what it pushes and when (schedules.Spec)
    LAST = "last"  # the watermark: the newest tick handled (fired or skipped), Unix seconds
    PAUSED = "paused"  # '1' while paused
    CREATED_AT = "created_at"
    FIRED = "fired"  # ticks pushed, in all
    SKIPPED = "skipped"  # ticks passed over by the catch-up policy, in all
    LAST_FIRED = "last_fired"  # the newest tick pushed
    LAST_ID = "last_id"  # the id of its job


class Event(StrEnum):
    """The monotonic counters kept per queue and pool (``Key.STATS``). Jobs started are
    the count of the queue-wait histogram (one observation per claim)."""

    PUSHED = "pushed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts that failed (each retry, and the last one before dead)
    RETRIED = "retried"
    DEAD = "dead"
    LOST = "lost"  # leases lost: the worker died or was cut off
    CANCELLED = "cancelled"
    REQUEUED = "requeued"  # dead jobs put back in line


#: Histogram bucket upper bounds, in seconds (a last bucket, +Inf, is implied).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)
#: Ready jobs a resource-aware claim looks at, at most (the head and those behind it).
RES_SCAN = 200
#: Attempts kept in a queue's events stream (approximately: trimmed by whole nodes).
EVENTS_CAP = 10000
#: A job's pool and retries when it names none: a job record leaves out these values (the
#: scripts' read() and records.job_record fill them in), which keeps a queued job small.
DEFAULT_POOL = "default"
DEFAULT_RETRIES = 3


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def prefix(queue: str) -> str:
    return f"ff:{{{queue}}}:"


def job(queue: str, job_id: str) -> str:
    return f"{prefix(queue)}{Key.JOB}{job_id}"


def ready(queue: str, pool: str) -> str:
    return f"{prefix(queue)}{Key.READY}{pool}"


def wake(queue: str, pool: str) -> str:
    return f"{prefix(queue)}{Key.WAKE}{pool}"


def queue_key(queue: str, key: Key) -> str:
    """A key of the queue with no suffix of its own (``Key.RUNNING``, ``Key.META`` ...)."""
    return f"{prefix(queue)}{key}"


def worker(name: str) -> str:
    return f"ff:worker:{name}"


def id_suffix(queue: str) -> str:
    """Four hex digits of the queue name, appended to job ids so ids are unique across queues."""
    return hashlib.sha1(queue.encode()).hexdigest()[:4]
