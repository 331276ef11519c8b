"""Guarantee 6 (jobs and results survive a server restart, append-only persistence) and
retention (finished records expire after ``result_ttl_seconds``)."""

from __future__ import annotations

import time
from typing import Any

from conftest import EmbeddedServer
from fifoflow import Queue
from fifoflow.settings import Settings
from qops import claim, complete, maintain

T = "fftest_targets:add"


def snapshot(q: Queue) -> dict[str, Any]:
    tracebacks = {i: q.traceback(i) for i in q.job_ids()}
    return {"stats": q.stats(), "jobs": q.jobs(), "tracebacks": tracebacks}


def populate(q: Queue) -> dict[str, str]:
    """One job in every status; returns their ids by role."""
    ids = {}
    ids["ok"] = q.push(T, {"x": 1}).id
    ids["dead"] = q.push(T, {"x": 2}, retries=0).id
    ids["running"] = q.push(T, {"x": 3}).id
    ids["cancelled"] = q.push(T, {"x": 4}).id
    ids["queued_a"] = q.push(T, {"x": 6}, pool="a").id
    ids["delayed"] = q.push(T, {"x": 7}, delay=300).id
    _, [ok, dead, running] = claim(q, "w", 3, ["default"], 300)
    complete(q, ok, "ok", '{"answer": 42}')
    complete(q, dead, "fail", "ValueError: no", traceback="Traceback...\nValueError: no\n")
    q.cancel(ids["cancelled"])
    ids["queued_hi"] = q.push(T, {"x": 5}, priority=2, key="hi").id
    ids["queued_lo"] = q.push(T, {"x": 8}).id
    assert running.id == ids["running"]
    return ids


def test_jobs_and_results_survive_a_restart(valkey: EmbeddedServer, qname: str) -> None:
    q = Queue(qname, url=valkey.url)
    ids = populate(q)
    before = snapshot(q)
    pid = valkey.pid
    valkey.restart()
    assert valkey.pid != pid
    fresh = Queue(qname, url=valkey.url)
    try:
        for handle in (fresh, q):  # a new client, and the old one reconnecting
            assert snapshot(handle) == before
        assert fresh.job(ids["ok"]).result(timeout=0) == {"answer": 42}
        assert fresh.traceback(ids["dead"]) == "Traceback...\nValueError: no\n"
        # scripts are reloaded by SHA on both clients; order, keys and ids carry on
        assert q.push(T, key="hi").id == ids["queued_hi"]
        newer = fresh.push(T, {"x": 9}).id
        assert newer > max(ids.values())
        _, claimed = claim(q, "w2", 10, ["default", "a"], 30)
        order = [ids["queued_hi"], ids["queued_a"], ids["queued_lo"], newer]
        assert [c.id for c in claimed] == order
        assert complete(fresh, claimed[0], "ok", "5").outcome == "succeeded"
        assert len(q.push_many(T, [{}] * 3)) == 3  # the pipelined path too
    finally:
        q.close()
        fresh.close()


def test_jobs_survive_a_crash(valkey: EmbeddedServer, qname: str) -> None:
    """SIGKILL: no shutdown, no final flush; what was acknowledged is in the log.

    With ``appendfsync always`` (FIFOFLOW_APPENDFSYNC=always) every acknowledged write
    is on disk; the default everysec may lose the last second or two in a crash."""
    q = Queue(qname, url=valkey.url)
    try:
        q.client.config_set("appendfsync", "always")  # until the restart reads the config file
        jobs = q.push_many(T, [{"x": i} for i in range(100)])
        _, [c] = claim(q, "w", 1, ["default"], 300)
        complete(q, c, "ok", "7")
        valkey.kill()
        valkey.restart()
        assert q.client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert q.stats()["queued"] == 99
        assert q.job(jobs[0].id).result(timeout=0) == 7
        _, claimed = claim(q, "w", 100, ["default"], 30)
        assert [x.id for x in claimed] == [j.id for j in jobs[1:]]
    finally:
        q.close()


def test_append_only_is_on(valkey: EmbeddedServer) -> None:
    q = Queue("persist-check", url=valkey.url)
    try:
        assert q.client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        q.close()


def test_finished_records_expire_after_ttl(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(result_ttl_seconds=1))
    try:
        done, dead, cancelled, waiting = (q.push(T, {"x": i}, retries=0) for i in range(4))
        _, [a, b] = claim(q, "w", 2, ["default"], 30)
        complete(q, a, "ok", "1")
        complete(q, b, "fail", "E: x")
        q.cancel(cancelled.id)
        assert q.stats() | {"succeeded": 1, "dead": 1, "cancelled": 1, "queued": 1} == q.stats()
        time.sleep(1.15)
        for j in (done, dead, cancelled):
            assert q.record(j.id) is None
        # stats trims the expired members of the finished sets
        assert q.stats() | {"succeeded": 0, "dead": 0, "cancelled": 0, "queued": 1} == q.stats()
        assert q.job_ids() == [waiting.id]
        assert q.record(waiting.id) is not None  # unfinished jobs never expire
    finally:
        q.close()


def test_maintain_reports_trimmed(any_url: str, qname: str) -> None:
    q = Queue(qname, url=any_url, settings=Settings(result_ttl_seconds=1))
    try:
        q.push_many(T, [{}] * 3)
        _, claimed = claim(q, "w", 3, ["default"], 30)
        for c in claimed:
            complete(q, c, "ok", "null")
        assert maintain(q) == (0, 0, 0)
        time.sleep(1.1)
        assert maintain(q) == (0, 0, 3)
    finally:
        q.close()


def test_long_ttl_keeps_records(queue: Queue) -> None:
    job = queue.push(T)
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    complete(queue, c, "ok", "1")
    ttl = queue.client.ttl(f"ff:{{{queue.name}}}:job:{job.id}")
    assert 7 * 24 * 3600 - 5 < ttl <= 7 * 24 * 3600
