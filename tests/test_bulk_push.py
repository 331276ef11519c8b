"""Bulk pushes: all or nothing across batches, a re-sent push or commit answered as the first
time (the compact reply runs), an abandoned staged push never visible and cleaned up, and
the compact job record (no stored creation time or zero attempts; both still reported)."""

from __future__ import annotations

import time

import pytest

from faultkit import DropProxy, PrivateRedis
from fifoflow import Queue, QueueFull, broker_push, keys
from fifoflow.broker_push import BATCH
from fifoflow.keys import Field, Key
from fifoflow.records import PushSpec, nonce
from fifoflow.settings import Settings
from qops import claim

T = "fftest_targets:add"
pytestmark = pytest.mark.timeout(120)


def job_keys(q: Queue) -> set[str]:
    return {str(k) for k in q.client.scan_iter(keys.queue_key(q.name, Key.JOB) + "*", count=1000)}


def test_a_multi_batch_push_past_max_length_adds_nothing(queue: Queue) -> None:
    queue.push_many(T, [{"x": i} for i in range(3)])
    before_ids, before_keys = queue.job_ids(), job_keys(queue)
    queue.set_max_length(2 * BATCH)
    with pytest.raises(QueueFull):
        queue.push_many(T, [{"x": i} for i in range(2 * BATCH)])  # three batches
    assert queue.job_ids() == before_ids
    assert job_keys(queue) == before_keys  # the staged hashes are gone too
    assert queue.client.zcard(keys.queue_key(queue.name, Key.STAGING)) == 0
    assert queue.stats()["queued"] == 3
    assert len(queue.push_many(T, [{}] * (2 * BATCH - 3))) == 2 * BATCH - 3  # fills it exactly


def test_a_multi_batch_push_lands_in_order_with_its_duplicates(queue: Queue) -> None:
    held = queue.push(T, key="held")
    n = 2 * BATCH + 3
    job_keys_ = [None] * n
    job_keys_[5], job_keys_[BATCH + 1], job_keys_[n - 1] = "held", "twice", "twice"
    jobs = queue.push_many(T, [{"x": i} for i in range(n)], keys_=job_keys_)
    assert len(jobs) == n
    assert jobs[5].id == held.id and jobs[n - 1].id == jobs[BATCH + 1].id
    fresh = [j.id for i, j in enumerate(jobs) if i not in (5, n - 1)]
    assert fresh == sorted(fresh) and len(set(fresh)) == n - 2
    assert queue.stats()["queued"] == n - 1  # held + the fresh ones
    assert [j.to_dict()["params"]["x"] for j in jobs[-3:-1]] == [n - 3, n - 2]


def _push_args(q: Queue, push_nonce: str, pairs: list[str]) -> list[str]:
    spec = PushSpec(target=T)
    return [push_nonce, "0", keys.id_suffix(q.name), str(q.broker.policy.ttl), *spec.args(), *pairs]


def test_a_resent_push_replies_as_the_first_and_adds_nothing(queue: Queue) -> None:
    held = queue.push(T, key="b")
    pairs = ["{}", "a", "{}", "", "{}", "a", "{}", "b", "{}", ""]
    n = nonce()
    _, first = queue.broker._script("push", queue.name, _push_args(queue, n, pairs))
    first_jobs = queue.broker._pushed(queue.name, first)
    assert [p.new for p in first_jobs] == [True, True, False, False, True]
    assert first_jobs[2].id == first_jobs[0].id and first_jobs[3].id == held.id
    before = queue.job_ids()
    _, again = queue.broker._script(
        "push", queue.name, _push_args(queue, n, pairs), resend_at=1, resent=True
    )
    assert queue.broker._pushed(queue.name, again) == first_jobs
    assert queue.job_ids() == before


def test_a_resent_commit_replies_as_the_first_and_adds_nothing(queue: Queue) -> None:
    broker, spec, suffix = queue.broker, PushSpec(target=T), keys.id_suffix(queue.name)
    push_id = nonce()
    for batch in range(2):
        pairs = [p for i in range(3) for p in (f'{{"x":{batch * 3 + i}}}', "")]
        broker._script(
            "stage", queue.name, [push_id, str(batch), "0", suffix, *spec.args(), "1", *pairs]
        )
    commit = [push_id, "0", str(broker.policy.ttl), *spec.args(), "0"]
    _, first = broker._script("commit", queue.name, commit)
    pushed = broker._pushed(queue.name, first)
    assert len(pushed) == 6 and all(p.new and p.status == "queued" for p in pushed)
    assert [queue.job(p.id).to_dict()["params"]["x"] for p in pushed] == list(range(6))
    _, again = broker._script("commit", queue.name, commit, resend_at=1, resent=True)
    assert broker._pushed(queue.name, again) == pushed
    assert queue.stats()["queued"] == 6


def test_an_abandoned_staged_push_stays_invisible_and_is_cleaned_up(queue: Queue) -> None:
    broker, spec, suffix = queue.broker, PushSpec(target=T), keys.id_suffix(queue.name)
    push_id = nonce()
    pairs = ["{}", ""] * 4
    broker._script("stage", queue.name, [push_id, "0", "0", suffix, *spec.args(), "1", *pairs])
    assert len(job_keys(queue)) == 4  # written ...
    assert queue.stats()["queued"] == 0 and claim(queue, "w", 10, ["default"], 30)[1] == []
    staging = keys.queue_key(queue.name, Key.STAGING)
    queue.client.zadd(staging, {push_id: time.time() - 3700})  # its producer died an hour ago
    broker.maintain(queue.name)
    assert job_keys(queue) == set()  # ... and gone with the stage list
    assert not queue.client.exists(keys.queue_key(queue.name, Key.STAGE) + push_id)
    assert queue.client.zcard(staging) == 0


def test_a_queued_job_stores_no_creation_time_or_status_yet_reports_them(queue: Queue) -> None:
    t0 = time.time()
    jobs = queue.push_many(T, [{"x": i} for i in range(3)])
    t1 = time.time()
    raw = queue.client.hgetall(keys.job(queue.name, jobs[0].id))
    assert not {Field.CREATED_AT, Field.ATTEMPTS, Field.PRIORITY, Field.STATUS} & set(raw)
    assert jobs[0].status == "queued" and jobs[0].cancel() and jobs[0].status == "cancelled"
    jobs = jobs[1:]
    created = [j.to_dict()["created_at"] for j in jobs]
    assert created == sorted(created) and t0 - 1 <= created[0] <= t1 + 1  # the rank's time
    assert jobs[0].to_dict()["attempts"] == 0
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    assert c.id == jobs[0].id and c.attempts == 1
    assert jobs[0].to_dict()["attempts"] == 1


def test_a_default_priority_job_goes_back_to_its_place(queue: Queue) -> None:
    """Priority 0 is not stored; a job that comes back (released, reaped, retried) still
    takes its place among jobs of priority 0, behind a higher one."""
    low = queue.push_many(T, [{"x": i} for i in range(2)])
    high = queue.push(T, {"x": 9}, priority=5)
    assert queue.client.hget(keys.job(queue.name, high.id), Field.PRIORITY) == "5"
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    assert c.id == high.id
    _, [c2] = claim(queue, "w", 1, ["default"], 30)
    assert c2.id == low[0].id
    assert queue.broker.release(queue.name, [c, c2]) == 2
    _, again = claim(queue, "w", 3, ["default"], 30)
    assert [j.id for j in again] == [high.id, low[0].id, low[1].id]
    assert [j.to_dict()["priority"] for j in (low[0], high)] == [0, 5]


def test_a_bad_parameter_set_in_a_late_batch_adds_nothing_and_leaves_nothing_staged(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_push, "BATCH", 3)  # batches are encoded as they are staged
    queue.push(T, {"x": -1})
    before_ids, before_keys = queue.job_ids(), job_keys(queue)
    sets: list[dict[object, object]] = [{"x": i} for i in range(10)]
    sets[8] = {"x": {1: 2}}  # a nested non-string key: refused, in the third batch
    with pytest.raises(TypeError, match="keys must be strings"):
        queue.push_many(T, sets)
    assert queue.job_ids() == before_ids
    assert job_keys(queue) == before_keys  # the two staged batches were dropped at once
    assert queue.client.zcard(keys.queue_key(queue.name, Key.STAGING)) == 0
    assert queue.stats()["queued"] == 1


@pytest.mark.parametrize("mode", ["silent", "reset"])
def test_a_lost_stage_reply_mid_push_lands_every_job_once_in_order(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage calls are pipelined; a reply lost on the way (the proxy drops the second
    batch's) makes the rest go one at a time, re-sent: nothing twice, nothing reordered."""
    monkeypatch.setattr(broker_push, "BATCH", 3)
    srv = PrivateRedis()
    proxy = DropProxy(srv.port)
    try:
        q = Queue("lost-stage", url=proxy.url, settings=Settings(socket_timeout=1.0))
        q.push(T, {"x": -1})  # connections made, the function library loaded
        proxy.arm(b":2\r\n", mode)  # the reply to the second batch: two batches staged
        pushed = q.push_many(T, [{"x": i} for i in range(10)])
        assert proxy.dropped.is_set()
        assert [j.id for j in pushed] == sorted(j.id for j in pushed)
        records = q.jobs()
        assert [r["params"]["x"] for r in records] == list(range(-1, 10))
        assert q.stats()["queued"] == 11
        assert len(job_keys(q)) == 11
    finally:
        proxy.close()
        srv.close()
