"""Guarantee 5 (a key already queued, delayed or running returns the existing job) and
back-pressure (``set_max_length``: a push past it raises QueueFull and adds nothing)."""

from __future__ import annotations

import threading

import pytest

from fifoflow import Queue, QueueFull
from fifoflow.settings import Settings
from qops import claim, complete

T = "fftest_targets:add"


def test_key_returns_the_queued_job(queue: Queue) -> None:
    first = queue.push(T, {"x": 1}, key="k1")
    again = queue.push(T, {"x": 2}, key="k1", priority=9)
    assert again.id == first.id
    assert again.to_dict()["params"] == {"x": 1}  # the existing job, unchanged
    assert again.to_dict()["key"] == "k1"
    assert queue.stats()["queued"] == 1


def test_key_returns_the_delayed_job(queue: Queue) -> None:
    first = queue.push(T, key="k", delay=60)
    assert queue.push(T, key="k").id == first.id
    assert queue.push(T, key="k", delay=1).id == first.id
    assert queue.stats()["delayed"] == 1
    assert queue.stats()["queued"] == 0


def test_key_returns_the_running_job(queue: Queue) -> None:
    first = queue.push(T, key="k")
    claim(queue, "w", 1, ["default"], 30)
    assert queue.push(T, key="k").id == first.id
    assert queue.stats()["queued"] == 0


def test_key_returns_the_job_waiting_for_a_retry(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=60))
    try:
        first = q.push(T, key="k")
        _, [c] = claim(q, "w", 1, ["default"], 30)
        assert complete(q, c, "fail", "E: x").outcome == "retry"
        assert q.push(T, key="k").id == first.id
    finally:
        q.close()


@pytest.mark.parametrize("ending", ["succeeded", "dead", "cancelled"])
def test_key_after_the_job_finished_makes_a_new_job(queue: Queue, ending: str) -> None:
    first = queue.push(T, key="k", retries=0)
    if ending == "cancelled":
        assert queue.cancel(first.id)
    else:
        _, [c] = claim(queue, "w", 1, ["default"], 30)
        complete(queue, c, "ok" if ending == "succeeded" else "fail", "1")
    assert first.status == ending
    second = queue.push(T, key="k")
    assert second.id != first.id
    assert second.status == "queued"
    assert queue.push(T, key="k").id == second.id  # and that one de-duplicates in turn


def test_keys_within_one_push_many(queue: Queue) -> None:
    jobs = queue.push_many(T, [{"x": i} for i in range(5)], keys_=["a", "b", "a", None, None])
    assert jobs[0].id == jobs[2].id
    assert len({j.id for j in jobs}) == 4
    assert queue.stats()["queued"] == 4
    # one shared key for the whole batch: a single job
    shared = queue.push_many(T, [{"x": i} for i in range(3)], key="s")
    assert len({j.id for j in shared}) == 1


def test_keys_are_per_queue(any_url: str, qname: str) -> None:
    q1, q2 = Queue(qname + "1", url=any_url), Queue(qname + "2", url=any_url)
    try:
        assert q1.push(T, key="k").id != q2.push(T, key="k").id
    finally:
        q1.close()
        q2.close()


def test_different_keys_and_no_key_do_not_dedupe(queue: Queue) -> None:
    ids = {queue.push(T, key="a").id, queue.push(T, key="b").id, queue.push(T).id, queue.push(T).id}
    assert len(ids) == 4


def test_max_length_refuses_pushes_past_it(queue: Queue) -> None:
    queue.set_max_length(3)
    queue.push_many(T, [{}] * 3)
    with pytest.raises(QueueFull) as info:
        queue.push(T)
    assert (info.value.pending, info.value.max_length, info.value.queue) == (3, 3, queue.name)
    assert "full" in str(info.value)
    assert queue.stats()["queued"] == 3
    claim(queue, "w", 1, ["default"], 30)  # running jobs no longer wait in line
    queue.push(T)
    with pytest.raises(QueueFull):
        queue.push(T)
    queue.set_max_length(None)
    queue.push_many(T, [{}] * 10)
    assert queue.stats()["queued"] == 13


def test_push_many_is_all_or_nothing(queue: Queue) -> None:
    queue.set_max_length(5)
    queue.push_many(T, [{}] * 3)
    before = queue.job_ids()
    with pytest.raises(QueueFull):
        queue.push_many(T, [{"x": i} for i in range(3)])
    assert queue.job_ids() == before
    assert queue.stats()["queued"] == 3
    assert len(queue.push_many(T, [{}] * 2)) == 2  # exactly filling it is fine


def test_delayed_and_retrying_jobs_count_towards_max_length(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=60))
    try:
        q.set_max_length(2)
        q.push(T, delay=60)
        q.push(T, pool="other")
        with pytest.raises(QueueFull):
            q.push(T)
        q.set_max_length(3)
        q.push(T)
        _, [c] = claim(q, "w", 1, ["default"], 30)
        complete(q, c, "fail", "E: x")  # waiting for a retry: still waiting
        with pytest.raises(QueueFull):
            q.push(T)
    finally:
        q.close()


def test_a_full_queue_still_returns_existing_keyed_jobs(queue: Queue) -> None:
    first = queue.push(T, key="k")
    queue.set_max_length(1)
    assert queue.push(T, key="k").id == first.id
    with pytest.raises(QueueFull):
        queue.push(T, key="other")


def test_zero_max_length_refuses_everything(queue: Queue) -> None:
    queue.set_max_length(0)
    with pytest.raises(QueueFull):
        queue.push(T)
    assert queue.job_ids() == []


@pytest.mark.parametrize(
    ("value", "exc"), [(-1, ValueError), (True, TypeError), (1.5, TypeError), ("3", TypeError)]
)
def test_bad_max_length(queue: Queue, value: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        queue.set_max_length(value)  # type: ignore[arg-type]
    queue.push(T)  # nothing was set


def test_dedupe_is_atomic_under_concurrent_pushes(any_url: str, qname: str) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def push() -> None:
        q = Queue(qname, url=any_url)
        try:
            for _ in range(20):
                job_id = q.push(T, key="same").id
                with lock:
                    results.append(job_id)
        finally:
            q.close()

    threads = [threading.Thread(target=push) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 80
    assert len(set(results)) == 1


def test_push_many_beyond_one_batch_is_all_or_nothing(queue: Queue) -> None:
    queue.set_max_length(6000)
    with pytest.raises(QueueFull):
        queue.push_many("fftest_targets:add", [{"x": i} for i in range(10000)])
    assert queue.stats()["queued"] == 0
    assert len(queue.push_many("fftest_targets:add", [{"x": i} for i in range(6000)])) == 6000
