"""The worker's side of the broker, for tests that drive claims and reports by hand."""

from __future__ import annotations

from collections.abc import Sequence

from fifoflow import Queue
from fifoflow.broker import nonce
from fifoflow.records import Claimed, ClaimRequest, Completion, Outcome, OutcomeKind


def claim(
    q: Queue, worker: str, n: int, pools: Sequence[str], lease: float
) -> tuple[float, list[Claimed]]:
    c = q.broker.claim(q.name, ClaimRequest(worker, n, list(pools), float(lease), nonce()))
    return c.next_event, c.jobs


def complete(
    q: Queue,
    job: Claimed,
    outcome: OutcomeKind,
    payload: str,
    *,
    traceback: str = "",
    extra: dict[str, str] | None = None,
    claim: tuple[str, int, Sequence[str], float] | None = None,
) -> Completion:
    req = None
    if claim is not None:
        worker, n, pools, lease = claim
        req = ClaimRequest(worker, n, list(pools), float(lease), nonce())
    return q.broker.complete(job, Outcome(outcome, payload, traceback, extra or {}), req)


def extend(q: Queue, jobs: Sequence[Claimed], lease: float) -> list[str]:
    return q.broker.extend(q.name, jobs, lease)[0]  # the ids whose lease was lost


def release(q: Queue, jobs: Sequence[Claimed]) -> int:
    return q.broker.release(q.name, jobs)


def maintain(q: Queue) -> tuple[int, int, int]:
    return q.broker.maintain(q.name)
