"""The Python API around the engine: input validation (TypeError/ValueError, nothing
queued), job records, stats counts, ``Job.result``."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from fifoflow import JobFailed, JobNotFound, Queue, UsageError
from fifoflow.settings import Settings
from qops import claim, complete

T = "fftest_targets:add"
FIELDS = {
    "id", "queue", "target", "params", "priority", "pool", "key", "retries", "timeout", "status",
    "attempts", "created_at", "started_at", "finished_at", "worker", "result", "error",
}  # fmt: skip


def assert_nothing_queued(q: Queue) -> None:
    assert q.job_ids() == []
    assert set(q.stats().values()) == {0}


@pytest.mark.parametrize(
    "params",
    [[1, 2], [], (), "x", "", 5, 0, False, {1: 2}, {("a",): 1}],
    ids=repr,
)
def test_params_must_be_a_json_object(queue: Queue, params: Any) -> None:
    with pytest.raises(TypeError):
        queue.push(T, params)
    with pytest.raises(TypeError):
        queue.push_many(T, [{"x": 1}, params])
    assert_nothing_queued(queue)


@pytest.mark.parametrize(
    "params",
    [{"x": math.nan}, {"x": math.inf}, {"x": [1, -math.inf]}],
    ids=["nan", "inf", "nested-inf"],
)
def test_params_must_be_finite(queue: Queue, params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        queue.push(T, params)
    assert_nothing_queued(queue)


@pytest.mark.parametrize(
    "params",
    [{"x": {1, 2}}, {"x": object()}, {"x": b"bytes"}, {"x": 1 + 2j}, {"x": {"y": {3: object()}}}],
    ids=["set", "object", "bytes", "complex", "nested"],
)
def test_params_must_be_json(queue: Queue, params: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        queue.push(T, params)
    assert_nothing_queued(queue)


def test_params_size_limit(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(max_params_bytes=100))
    try:
        with pytest.raises(ValueError, match="limit"):
            q.push_many(T, [{"x": 1}, {"x": "y" * 200}])
        assert_nothing_queued(q)
        q.push(T, {"x": "y" * 50})
    finally:
        q.close()


@pytest.mark.parametrize(
    "target",
    ["", "nocolon", "a.b:", ":fn", "a b:c", "1mod:f", "mod:f.g", "mod::f", "mod.:f", "m-x:f",
     "mod:f()", None, 3, b"mod:f"],
    ids=repr,
)  # fmt: skip
def test_bad_target_names(queue: Queue, target: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        queue.push(target)
    with pytest.raises((TypeError, ValueError)):
        queue.push_many(target, [{}])
    assert_nothing_queued(queue)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"retries": -1}, ValueError),
        ({"retries": 1.0}, TypeError),
        ({"retries": "3"}, TypeError),
        ({"retries": True}, TypeError),  # None is the default (FIFOFLOW_RETRIES)
        ({"priority": 1.5}, TypeError),
        ({"priority": True}, TypeError),
        ({"priority": "high"}, TypeError),
        ({"delay": -1}, ValueError),
        ({"delay": math.nan}, ValueError),
        ({"delay": math.inf}, ValueError),
        ({"delay": "5"}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": -2.5}, ValueError),
        ({"timeout": math.nan}, ValueError),
        ({"timeout": True}, TypeError),
        ({"pool": ""}, ValueError),
        ({"pool": "a:b"}, ValueError),
        ({"pool": "{x}"}, ValueError),
        ({"pool": "x" * 65}, ValueError),
        ({"pool": None}, ValueError),
        ({"key": ""}, ValueError),
        ({"key": "k" * 513}, ValueError),
        ({"key": 5}, ValueError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v.__name__,
)
def test_bad_options_raise_and_queue_nothing(
    queue: Queue, kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        queue.push(T, {"x": 1}, **kwargs)
    with pytest.raises(exc):
        queue.push_many(T, [{"x": 1}, {"x": 2}], **kwargs)
    assert_nothing_queued(queue)


def test_keys_list_must_match_params(queue: Queue) -> None:
    with pytest.raises(ValueError):
        queue.push_many(T, [{}, {}], keys_=["a"])
    assert_nothing_queued(queue)


def test_usage_errors_are_value_errors(queue: Queue) -> None:
    with pytest.raises(UsageError):
        queue.push("bad")
    assert issubclass(UsageError, ValueError)


@pytest.mark.parametrize("name", ["", "a:b", "{q}", "with space", "x" * 65])
def test_bad_queue_names(any_url: str, name: str) -> None:
    with pytest.raises(ValueError):
        Queue(name, url=any_url)


def test_unknown_status_filter(queue: Queue) -> None:
    with pytest.raises(ValueError):
        queue.job_ids("done")


def test_edge_values_that_are_fine(queue: Queue) -> None:
    jobs = [
        queue.push(T),  # no params: {}
        queue.push(T, None),
        queue.push(T, {"s": "ünïcødé ✓", "n": None, "l": [1, 2.5, {"d": True}]}),
        queue.push(T, retries=0, timeout=0.001, delay=0, priority=-5, pool="a-b.c_D9"),
        queue.push(T, key="k" * 512),
    ]
    assert jobs[0].to_dict()["params"] == {} == jobs[1].to_dict()["params"]
    assert jobs[2].to_dict()["params"] == {"s": "ünïcødé ✓", "n": None, "l": [1, 2.5, {"d": True}]}
    assert queue.push_many(T, []) == []
    assert queue.stats()["queued"] == 5


def test_job_record_has_every_contract_field(queue: Queue) -> None:
    job = queue.push(T, {"x": 1, "y": 2}, priority=3, pool="p", key="kk", retries=5, timeout=9.5)
    rec = job.to_dict()
    assert set(rec) >= FIELDS
    assert rec | {
        "id": job.id, "queue": queue.name, "target": T, "params": {"x": 1, "y": 2},
        "priority": 3, "pool": "p", "key": "kk", "retries": 5, "timeout": 9.5,
        "status": "queued", "attempts": 0, "started_at": None, "finished_at": None,
        "worker": None, "result": None, "error": None,
    } == rec  # fmt: skip
    assert abs(rec["created_at"] - time.time()) < 5
    # attribute access reads fresh fields from the server
    assert (job.status, job.attempts, job.priority, job.pool) == ("queued", 0, 3, "p")
    with pytest.raises(AttributeError):
        _ = job.no_such_field
    assert queue.job(job.id) == job
    assert len({job, queue.job(job.id)}) == 1


def test_missing_job(queue: Queue) -> None:
    assert queue.record("0000000000000000ab") is None
    with pytest.raises(JobNotFound):
        queue.job("0000000000000000ab")


def test_stats_counts_every_status(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(retry_base_seconds=60))
    try:
        assert q.stats() == dict.fromkeys(
            ("queued", "waiting", "delayed", "running", "succeeded", "dead", "cancelled"), 0
        )
        q.push_many(T, [{}] * 6)
        q.push(T, pool="other")
        q.push(T, delay=60)
        _, claimed = claim(q, "w", 5, ["default"], 30)
        complete(q, claimed[0], "ok", "1")
        complete(q, claimed[1], "ok", "2")
        complete(q, claimed[2], "dead", "E: x")
        complete(q, claimed[3], "fail", "E: y")  # waiting for a retry: delayed
        q.cancel(q.job_ids("queued")[0])
        parent = q.job_ids("running")[0]
        q.push(T, depends_on=[parent])  # waiting for it
        assert q.stats() == {
            "queued": 1, "waiting": 1, "delayed": 2, "running": 1, "succeeded": 2, "dead": 1,
            "cancelled": 1,
        }  # fmt: skip
        for status, n in q.stats().items():
            assert len(q.job_ids(status)) == n
            assert [r["status"] for r in q.jobs(status)] == [status] * n
        assert len(q.job_ids()) == 9
        assert len(q.jobs(limit=3)) == 3
    finally:
        q.close()


def test_result_returns_the_value(queue: Queue) -> None:
    job = queue.push(T, {"x": 1})
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    complete(queue, c, "ok", '{"sum": [1, 2], "none": null}')
    assert job.result(timeout=1) == {"sum": [1, 2], "none": None}
    assert job.result() == {"sum": [1, 2], "none": None}


def test_result_waits_for_the_job(queue: Queue) -> None:
    job = queue.push(T)

    def work() -> None:
        time.sleep(0.15)
        _, [c] = claim(queue, "w", 1, ["default"], 30)
        complete(queue, c, "ok", "42")

    t = threading.Thread(target=work)
    t.start()
    try:
        start = time.monotonic()
        assert job.result(timeout=10) == 42
        assert time.monotonic() - start < 2
    finally:
        t.join()


def test_result_raises_job_failed_when_dead(queue: Queue) -> None:
    job = queue.push(T, retries=0)
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    complete(queue, c, "fail", "ZeroDivisionError: division by zero")
    with pytest.raises(JobFailed) as info:
        job.result(timeout=1)
    assert info.value.job_id == job.id
    assert info.value.status == "dead"
    assert "ZeroDivisionError: division by zero" in str(info.value)


def test_result_times_out(queue: Queue) -> None:
    job = queue.push(T)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        job.result(timeout=0.2)
    assert 0.15 < time.monotonic() - start < 1.5
    with pytest.raises(TimeoutError):
        job.result(timeout=0)
    claim(queue, "w", 1, ["default"], 30)
    with pytest.raises(TimeoutError, match="running"):
        job.result(timeout=0.05)


def test_result_of_null(queue: Queue) -> None:
    job = queue.push(T)
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    complete(queue, c, "ok", "null")
    assert job.result(timeout=1) is None


def test_result_of_missing_job(queue: Queue) -> None:
    job = queue.push(T, retries=0)
    queue.cancel(job.id)
    queue.client.delete(f"ff:{{{queue.name}}}:job:{job.id}")
    with pytest.raises(JobNotFound):
        job.result(timeout=1)


def test_queue_default_name_from_settings(any_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIFOFLOW_QUEUE", "from-env")
    q = Queue(url=any_url)
    try:
        assert q.name == "from-env"
    finally:
        q.close()
