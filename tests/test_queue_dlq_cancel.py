"""Cancel (queued and delayed jobs only) and the dead-letter queue (list, requeue with
fresh retries at the original place, purge)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fifoflow import JobFailed, JobNotFound, Queue
from fifoflow.settings import Settings
from qops import claim, complete

T = "fftest_targets:boom"


@pytest.fixture
def fq(any_url: str, qname: str) -> Iterator[Queue]:
    fast = Settings(retry_base_seconds=0.01, retry_max_seconds=0.02)
    q = Queue(qname, url=any_url, settings=fast)
    yield q
    q.close()


def kill(q: Queue, job_id: str) -> None:
    """Fail the job's attempts until it is dead (it must be next in line)."""
    for _ in range(20):
        _, claimed = claim(q, "w", 1, ["default"], 30)
        if not claimed:
            time.sleep(0.01)
            continue
        assert claimed[0].id == job_id
        if complete(q, claimed[0], "fail", "ValueError: boom", traceback="tb").outcome == "dead":
            return
    raise AssertionError("job did not die")


def test_cancel_a_queued_job(fq: Queue) -> None:
    job = fq.push(T)
    other = fq.push(T)
    assert fq.cancel(job.id) is True
    rec = job.to_dict()
    assert rec["status"] == "cancelled"
    assert rec["finished_at"] is not None
    _, claimed = claim(fq, "w", 5, ["default"], 30)
    assert [c.id for c in claimed] == [other.id]
    stats = fq.stats()
    assert (stats["cancelled"], stats["queued"]) == (1, 0)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=1)
    assert info.value.status == "cancelled"


def test_job_cancel_method(fq: Queue) -> None:
    job = fq.push(T, pool="p")
    assert job.cancel() is True
    finished = job.to_dict()["finished_at"]
    assert job.cancel() is True  # idempotent: it is cancelled, nothing changes
    assert job.to_dict()["finished_at"] == finished
    assert job.queue.stats()["cancelled"] == 1


def test_cancel_a_delayed_job(fq: Queue) -> None:
    job = fq.push(T, delay=0.05)
    assert fq.cancel(job.id)
    time.sleep(0.08)
    assert claim(fq, "w", 1, ["default"], 30)[1] == []
    assert job.status == "cancelled"
    assert fq.stats()["delayed"] == 0


def test_cancel_a_job_waiting_for_a_retry(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=60))
    try:
        job = q.push(T)
        _, [c] = claim(q, "w", 1, ["default"], 30)
        complete(q, c, "fail", "E: x")
        assert job.status == "delayed"
        assert q.cancel(job.id)
        assert q.stats()["delayed"] == 0
        assert job.status == "cancelled"
    finally:
        q.close()


def test_a_running_job_is_marked_and_runs_until_its_worker_stops_it(fq: Queue) -> None:
    job = fq.push(T)
    _, [c] = claim(fq, "w", 1, ["default"], 30)
    assert fq.cancel(job.id) is True  # being cancelled: its worker is told
    assert job.status == "running"  # until the worker reports (here: a success first)
    assert complete(fq, c, "ok", "1").outcome == "succeeded"
    assert fq.cancel(job.id) is False
    assert job.status == "succeeded"


def test_cancel_unknown_job(fq: Queue) -> None:
    with pytest.raises(JobNotFound):
        fq.cancel("00000000000000ffff")


def test_cancel_frees_the_dedupe_key(fq: Queue) -> None:
    job = fq.push(T, key="k")
    fq.cancel(job.id)
    assert fq.push(T, key="k").id != job.id


def test_dead_letters_list(fq: Queue) -> None:
    a = fq.push(T, {"n": 1}, retries=0)
    kill(fq, a.id)
    b = fq.push(T, {"n": 2}, retries=1)
    kill(fq, b.id)
    dead = fq.dead_letters()
    assert [d["id"] for d in dead] == [a.id, b.id]
    assert all(d["status"] == "dead" and d["error"] == "ValueError: boom" for d in dead)
    assert [d["attempts"] for d in dead] == [1, 2]
    assert [d["id"] for d in fq.dead_letters(limit=1)] == [a.id]
    with pytest.raises(JobFailed) as info:
        a.result(timeout=1)
    assert (info.value.status, info.value.error) == ("dead", "ValueError: boom")


def test_requeue_gives_fresh_retries_at_the_original_place(fq: Queue) -> None:
    a = fq.push(T, retries=1, key="ka")
    kill(fq, a.id)
    b = fq.push(T)
    c = fq.push(T)
    assert fq.requeue([a.id]) == [a.id]
    rec = a.to_dict()
    assert (rec["status"], rec["finished_at"], rec["worker"]) == ("queued", None, None)
    assert fq.stats()["dead"] == 0
    assert fq.push(T, key="ka").id == a.id  # its key is live again
    _, claimed = claim(fq, "w", 3, ["default"], 30)
    assert [x.id for x in claimed] == [a.id, b.id, c.id]
    # fresh retries: one more failure is a retry again, not death
    assert complete(fq, claimed[0], "fail", "E: again").outcome == "retry"
    kill(fq, a.id)
    assert a.status == "dead"


def test_requeue_all_and_ignore_non_dead(fq: Queue) -> None:
    jobs = [fq.push(T, {"n": i}, retries=0) for i in range(3)]
    for j in jobs:
        kill(fq, j.id)
    alive = fq.push(T)
    assert fq.requeue([alive.id, "nope"]) == []
    assert sorted(fq.requeue()) == [j.id for j in jobs]
    assert fq.requeue() == []
    assert fq.requeue([]) == []
    stats = fq.stats()
    assert (stats["queued"], stats["dead"]) == (4, 0)


def test_purge_dead(fq: Queue) -> None:
    jobs = [fq.push(T, {"n": i}, retries=0) for i in range(3)]
    for j in jobs:
        kill(fq, j.id)
    ok = fq.push("fftest_targets:add")
    _, [c] = claim(fq, "w", 1, ["default"], 30)
    complete(fq, c, "ok", "1")
    assert fq.purge_dead() == 3
    assert fq.dead_letters() == []
    assert fq.record(jobs[0].id) is None
    with pytest.raises(JobNotFound):
        jobs[0].refresh()
    assert fq.stats()["dead"] == 0
    assert ok.status == "succeeded"  # other finished jobs stay
    assert fq.purge_dead() == 0


def test_requeued_job_no_longer_expires(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(result_ttl_seconds=1))
    try:
        job = q.push(T, retries=0)
        kill(q, job.id)
        assert q.client.ttl(f"ff:{{{q.name}}}:job:{job.id}") > 0
        q.requeue([job.id])
        assert q.client.ttl(f"ff:{{{q.name}}}:job:{job.id}") == -1
    finally:
        q.close()
