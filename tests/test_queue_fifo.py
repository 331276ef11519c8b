"""Guarantee 1 (FIFO within a priority, higher priority first), pools, multi-pool claims,
job ids that sort by creation, and the wake-up tokens that keep idle workers greedy."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import blocked_ids, wait_for
from fifoflow import Queue, keys
from qops import claim

T = "fftest_targets:add"
W = "w1"


def claim_ids(q: Queue, n: int, pools: list[str] | None = None, worker: str = W) -> list[str]:
    _, claimed = claim(q, worker, n, pools or ["default"], 30)
    return [c.id for c in claimed]


def drain(q: Queue, pools: list[str] | None = None, n: int = 1) -> list[str]:
    out: list[str] = []
    while True:
        ids = claim_ids(q, n, pools)
        if not ids:
            return out
        out += ids


def test_fifo_within_one_priority(queue: Queue) -> None:
    ids = [queue.push(T, {"x": i}).id for i in range(30)]
    assert drain(queue) == ids


def test_fifo_when_claiming_several_at_once(queue: Queue) -> None:
    ids = [j.id for j in queue.push_many(T, [{"x": i} for i in range(25)])]
    got = claim_ids(queue, 7) + claim_ids(queue, 7) + claim_ids(queue, 100)
    assert got == ids
    assert claim_ids(queue, 5) == []


def test_fifo_across_push_and_push_many(queue: Queue) -> None:
    ids = [queue.push(T, {"x": 0}).id]
    ids += [j.id for j in queue.push_many(T, [{"x": i} for i in range(1, 6)])]
    ids.append(queue.push(T, {"x": 6}).id)
    assert drain(queue, n=3) == ids


def test_higher_priority_first_then_push_order(queue: Queue) -> None:
    priorities = [0, 5, -1, 5, 0, 10, -1, 0, 10, 3]
    pushed = [(p, queue.push(T, {"x": i}, priority=p).id) for i, p in enumerate(priorities)]
    expected = [i for _, i in sorted(pushed, key=lambda pi: -pi[0])]  # stable: push order
    assert drain(queue) == expected


def test_large_and_negative_priorities(queue: Queue) -> None:
    a = queue.push(T, priority=-(10**9)).id
    b = queue.push(T, priority=10**9).id
    c = queue.push(T, priority=0).id
    assert drain(queue) == [b, c, a]


def test_pools_are_isolated(queue: Queue) -> None:
    a = [queue.push(T, {"x": i}, pool="gpu").id for i in range(3)]
    d = [queue.push(T, {"x": i}).id for i in range(3)]
    assert claim_ids(queue, 10, ["cpu"]) == []
    assert claim_ids(queue, 10, ["default"]) == d
    assert claim_ids(queue, 10, ["default"]) == []
    assert claim_ids(queue, 10, ["gpu"]) == a
    assert queue.pools() == ["default", "gpu"]


def test_multi_pool_claim_takes_best_head(queue: Queue) -> None:
    a1 = queue.push(T, pool="a").id
    b1 = queue.push(T, pool="b").id
    b_hi = queue.push(T, pool="b", priority=5).id
    a2 = queue.push(T, pool="a").id
    c1 = queue.push(T, pool="c", priority=9).id  # a pool nobody asks for
    expected = [b_hi, a1, b1, a2]
    assert drain(queue, ["a", "b"]) == expected
    assert claim_ids(queue, 5, ["c"]) == [c1]


@pytest.mark.parametrize("pools", [["a", "b"], ["b", "a"]])
def test_multi_pool_claim_ignores_pool_order(queue: Queue, pools: list[str]) -> None:
    ids = []
    for i in range(8):
        ids.append(queue.push(T, {"x": i}, pool="ab"[i % 2]).id)
    assert claim_ids(queue, 8, pools) == ids


def test_multi_pool_claim_includes_missing_pool(queue: Queue) -> None:
    a = queue.push(T, pool="a").id
    assert claim_ids(queue, 3, ["never-used", "a"]) == [a]


def test_claimed_job_carries_what_a_worker_needs(queue: Queue) -> None:
    job = queue.push(T, {"x": 1, "y": 2}, timeout=2.5)
    _, [c] = claim(queue, "w-7", 1, ["default"], 30)
    assert (c.id, c.queue, c.target, c.attempts, c.timeout) == (job.id, queue.name, T, 1, 2.5)
    assert c.params == '{"x":1,"y":2}'
    assert c.token
    rec = job.to_dict()
    assert rec["status"] == "running"
    assert rec["worker"] == "w-7"
    assert rec["started_at"] is not None


def test_job_ids_sort_by_creation(queue: Queue) -> None:
    jobs = [
        queue.push(T, priority=3),
        queue.push(T, pool="other"),
        queue.push(T, delay=60),
        *queue.push_many(T, [{}] * 5, priority=-2),
        queue.push(T, key="k"),
    ]
    ids = [j.id for j in jobs]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert len({len(i) for i in ids}) == 1  # fixed width: string order is creation order
    created = [j.created_at for j in jobs]
    assert created == sorted(created)
    assert [r["id"] for r in queue.jobs()] == ids  # listings are oldest first


def test_ids_increase_across_batches(queue: Queue) -> None:
    from fifoflow.broker_push import BATCH

    jobs = queue.push_many(T, [{"x": i} for i in range(BATCH + 7)])
    ids = [j.id for j in jobs]
    assert ids == sorted(ids)
    assert len(set(ids)) == BATCH + 7
    assert queue.stats()["queued"] == BATCH + 7
    assert claim_ids(queue, 3) == ids[:3]


def test_ids_unique_across_queues(any_url: str, qname: str) -> None:
    q1, q2 = Queue(qname + "a", url=any_url), Queue(qname + "b", url=any_url)
    try:
        ids1 = {j.id for j in q1.push_many(T, [{}] * 50)}
        ids2 = {j.id for j in q2.push_many(T, [{}] * 50)}
        assert not ids1 & ids2
        assert claim_ids(q1, 100) and claim_ids(q2, 100)
        assert claim_ids(q1, 1) == [] and claim_ids(q2, 1) == []
    finally:
        q1.close()
        q2.close()


def test_push_wakes_a_blocked_worker(queue: Queue, any_url: str) -> None:
    """Greedy: an idle worker blocks on the wake list and a push wakes it at once."""
    queue.push(T)
    assert claim_ids(queue, 5)  # nothing ready now: the claim drops stale wake tokens
    assert queue.client.llen(keys.wake(queue.name, "default")) == 0
    woke: list[float] = []
    before = blocked_ids(queue.client)

    def block() -> None:
        client = Queue(queue.name, url=any_url).client
        try:
            if client.blpop([keys.wake(queue.name, "default")], timeout=10):
                woke.append(time.monotonic())
        finally:
            client.close()

    t = threading.Thread(target=block)
    t.start()
    wait_for(lambda: blocked_ids(queue.client) - before, timeout=30)  # it waits: blocked
    pushed = time.monotonic()
    queue.push(T)
    t.join(10)
    assert woke and woke[0] - pushed < 1.0
    assert claim_ids(queue, 5)


def test_wake_tokens_are_capped(queue: Queue) -> None:
    queue.push_many(T, [{}] * 1500)
    assert 0 < queue.client.llen(keys.wake(queue.name, "default")) <= 1000
