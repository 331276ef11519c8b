"""Guarantee 4: failed attempts are retried with exponential back-off and jitter, then the
job is dead; delays; a retried job keeps its place in line."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fifoflow import Queue
from fifoflow.records import Claimed
from fifoflow.settings import Settings
from qops import claim, complete, maintain

T = "fftest_targets:boom"
W = "w1"
TB = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'


@pytest.fixture
def fq(any_url: str, qname: str) -> Iterator[Queue]:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=0.05, retry_max_seconds=1.0))
    yield q
    q.close()


def claim_one(q: Queue, worker: str = W, lease: float = 30) -> Claimed | None:
    _, claimed = claim(q, worker, 1, ["default"], lease)
    return claimed[0] if claimed else None


def wait_claim(q: Queue, timeout: float = 5.0) -> Claimed:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = claim_one(q)
        if c is not None:
            return c
        time.sleep(0.01)
    raise AssertionError("nothing became claimable")


@pytest.fixture
def slow_fq(any_url: str, qname: str) -> Iterator[Queue]:
    """Back-off of 0.5-1 s, then 1-2 s: the job stays delayed long enough for the checks
    below on a busy machine (housekeeping, which stats() runs, promotes a due job)."""
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=1.0, retry_max_seconds=5.0))
    yield q
    q.close()


def test_fail_retries_with_backoff_then_dead(slow_fq: Queue) -> None:
    fq = slow_fq
    job = fq.push(T, {"message": "boom"}, retries=2)
    for attempt in (1, 2):
        c = wait_claim(fq)
        assert (c.id, c.attempts) == (job.id, attempt)
        done = complete(fq, c, "fail", "ValueError: boom", traceback=TB)
        assert done.outcome == "retry"
        rec = job.to_dict()
        assert rec["status"] == "delayed"
        assert rec["error"] == "ValueError: boom"
        assert rec["due_at"] is not None
        # back-off: base * 2**(failures-1) * jitter in [0.5, 1]. With nothing else
        # scheduled, next_event is exactly that delay (same server clock reading).
        full = 1.0 * 2 ** (attempt - 1)
        assert 0.5 * full - 1e-6 <= done.next_event <= full + 1e-6
        assert fq.stats()["delayed"] == 1
        assert fq.job_ids("delayed") == [job.id]
    c = wait_claim(fq)
    assert c.attempts == 3
    done = complete(fq, c, "fail", "ValueError: boom", traceback=TB)
    assert done.outcome == "dead"
    rec = job.to_dict()
    assert rec["status"] == "dead"
    assert rec["attempts"] == 3
    assert rec["error"] == "ValueError: boom"
    assert "\n" not in rec["error"]
    assert rec["finished_at"] is not None
    assert rec["result"] is None
    assert fq.traceback(job.id) == TB
    assert [r["id"] for r in fq.dead_letters()] == [job.id]
    stats = fq.stats()
    assert (stats["dead"], stats["queued"], stats["delayed"], stats["running"]) == (1, 0, 0, 0)
    time.sleep(0.25)
    assert claim_one(fq) is None  # dead stays dead


def test_retry_not_claimable_before_due(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=1.0))
    try:
        job = q.push(T)
        done = complete(q, claim_one(q), "fail", "ValueError: x")  # type: ignore[arg-type]
        assert done.next_event >= 0.5
        due = job.to_dict()["due_at"]
        assert claim_one(q) is None
        time.sleep(max(0.0, due - time.time()) + 0.02)
        c = claim_one(q)
        assert c is not None and c.id == job.id and c.attempts == 2
    finally:
        q.close()


def test_backoff_is_capped(any_url: str, qname: str) -> None:
    fast = Settings(retry_base_seconds=0.04, retry_max_seconds=0.08)
    q = Queue(qname, url=any_url, settings=fast)
    try:
        job = q.push(T, retries=5)
        waits = []
        for _ in range(4):
            c = wait_claim(q)
            done = complete(q, c, "fail", "E: x")
            assert done.outcome == "retry"
            waits.append(done.next_event)  # exactly the back-off: nothing else is scheduled
        assert job.to_dict()["attempts"] == 4
        for w in waits:
            assert w <= 0.08 + 1e-6
        # uncapped, the 3rd and 4th would wait 0.16 and 0.32 (times jitter >= 0.5)
        assert waits[2] >= 0.04 - 1e-6 and waits[3] >= 0.04 - 1e-6
    finally:
        q.close()


def test_jitter_spreads_retries(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=100.0))
    try:
        jobs = q.push_many(T, [{}] * 12)
        _, claimed = claim(q, W, 12, ["default"], 30)
        for c in claimed:
            complete(q, c, "fail", "E: x")
        dues = {round(j.to_dict()["due_at"], 3) for j in jobs}
        assert len(dues) > 1
    finally:
        q.close()


def test_retried_job_keeps_its_place(fq: Queue) -> None:
    a, b, c = (fq.push(T, {"n": i}).id for i in range(3))
    first = claim_one(fq)
    assert first is not None and first.id == a
    complete(fq, first, "fail", "E: x")
    time.sleep(0.12)  # past the back-off: A is due again before anyone claims B
    _, claimed = claim(fq, W, 3, ["default"], 30)
    assert [x.id for x in claimed] == [a, b, c]


def test_outcome_dead_skips_remaining_retries(fq: Queue) -> None:
    job = fq.push(T, retries=3)
    c = claim_one(fq)
    assert complete(fq, c, "dead", "TargetNotAllowed: no", traceback="tb").outcome == "dead"  # type: ignore[arg-type]
    assert job.status == "dead"
    assert fq.traceback(job.id) == "tb"


def test_zero_retries_dies_on_first_failure(fq: Queue) -> None:
    job = fq.push(T, retries=0)
    assert complete(fq, claim_one(fq), "fail", "E: x").outcome == "dead"  # type: ignore[arg-type]
    assert job.to_dict()["attempts"] == 1
    assert job.status == "dead"


def test_success_after_retry_clears_error(fq: Queue) -> None:
    job = fq.push("fftest_targets:flaky", {"marker": "/nonexistent"}, retries=1)
    complete(fq, claim_one(fq), "fail", "RuntimeError: first attempt fails", traceback=TB)  # type: ignore[arg-type]
    c = wait_claim(fq)
    assert complete(fq, c, "ok", '"ok"').outcome == "succeeded"
    rec = job.to_dict()
    assert (rec["status"], rec["result"], rec["attempts"]) == ("succeeded", "ok", 2)
    assert rec["error"] is None
    assert fq.traceback(job.id) is None
    assert job.result(timeout=1) == "ok"


def test_delayed_job_not_claimable_before_due(queue: Queue) -> None:
    job = queue.push(T, delay=0.6)
    later = queue.push(T)
    rec = job.to_dict()
    assert rec["status"] == "delayed"
    assert rec["due_at"] == pytest.approx(rec["created_at"] + 0.6, abs=0.01)
    next_event, claimed = claim(queue, W, 5, ["default"], 30)
    assert [c.id for c in claimed] == [later.id]
    assert 0 < next_event <= 0.6  # the delayed job, not the 30 s lease, is due first
    assert claim_one(queue) is None
    assert queue.job_ids("delayed") == [job.id]
    time.sleep(max(0.0, rec["due_at"] - time.time()) + 0.02)
    c = claim_one(queue)
    assert c is not None and c.id == job.id


def test_due_delayed_job_takes_its_place_by_creation(queue: Queue) -> None:
    d = queue.push(T, delay=0.1).id
    a = queue.push(T).id
    time.sleep(0.15)
    assert [c.id for c in claim(queue, W, 5, ["default"], 30)[1]] == [d, a]


def test_next_event_reports_soonest_due_job(queue: Queue) -> None:
    assert claim(queue, W, 1, ["default"], 30)[0] == -1
    queue.push(T, delay=5)
    queue.push(T, delay=2)
    next_event, claimed = claim(queue, W, 1, ["default"], 30)
    assert claimed == []
    assert 1.0 < next_event <= 2.0


def test_zero_delay_is_immediate(queue: Queue) -> None:
    job = queue.push(T, delay=0)
    assert job.status == "queued"
    c = claim_one(queue)
    assert c is not None and c.id == job.id


def test_maintain_promotes_due_jobs(queue: Queue) -> None:
    job = queue.push(T, delay=0.05)
    time.sleep(0.08)
    assert maintain(queue)[0] == 1
    assert job.status == "queued"
