"""fifoflow on a real Redis Cluster (3 masters + 3 replicas of Debian's redis-server):
queues spread over the masters, one worker serving 8 queues on all three, the commands
that span queues, the cluster and Sentinel URLs and their errors."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conftest import Processes, run_cli, wait_for
from fifoflow import Queue, keys
from fifoflow.connection import connect, redact

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def eight(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Queue]]:
    """8 fresh queues landing on the three masters (3 + 3 + 2)."""
    monkeypatch.setenv("FIFOFLOW_URL", cluster.url)
    names = cluster.queues_on_every_master(3, f"c8-{time.monotonic_ns() % 10**8}-")[:8]
    qs = [Queue(n, url=cluster.url) for n in names]
    yield qs
    for q in qs:
        q.close()


def blocked_on(cluster: Any, port: int) -> int:
    c = cluster.node(port).client()
    try:
        return sum("b" in str(x.get("flags", "")) for x in c.client_list())
    finally:
        c.close()


def test_eight_queues_on_three_masters_one_worker(
    cluster: Any, eight: list[Queue], procs: Processes
) -> None:
    masters = {q.name: cluster.master_of(q.name) for q in eight}
    assert len(set(masters.values())) == 3  # the queues really are spread
    assert {q.broker.topology.node(q.name) for q in eight} == {
        f"127.0.0.1:{p}" for p in masters.values()
    }  # the client routes each queue to the master that holds its slot
    idle = {p: blocked_on(cluster, p) for p in set(masters.values())}
    procs.worker("fftest_targets", *[a for q in eight for a in ("-q", q.name)], "-c", "2")
    # Idle, it waits on every queue, on the master holding it (a BLPOP may only name keys
    # of one hash slot: one connection per queue).
    per_master = collections.Counter(masters.values())
    wait_for(
        lambda: all(blocked_on(cluster, p) == idle[p] + per_master[p] for p in idle), timeout=30
    )
    # A push to a queue on another master than the first queue's wakes it promptly.
    far = next(q for q in eight if masters[q.name] != masters[eight[0].name])
    first = far.push("fftest_targets:add", {"x": 1, "y": 2})
    assert first.result(timeout=20) == 3
    rec = far.record(first.id)
    assert rec is not None
    woke = float(rec["started_at"]) - float(rec["created_at"])
    jobs = [q.push("fftest_targets:add", {"x": i}) for i, q in enumerate(eight)]
    dead = [q.push("fftest_targets:boom", {}, retries=0) for q in eight[::3]]
    for i, j in enumerate(jobs):
        assert j.result(timeout=30) == i
    for d in dead:
        wait_for(lambda d=d: d.status == "dead", timeout=30)
    print(f"\npush to a queue on another master than the first -> started {woke:.3f}s later")

    # Commands that span queues read each master (the client groups reads per node).
    status = json.loads(run_cli("status", "--json").stdout)
    for i, q in enumerate(eight):
        counts = status["queues"][q.name]
        assert counts["succeeded"] == (2 if q is far else 1), (q.name, counts)
        assert counts["dead"] == (1 if i % 3 == 0 else 0), (q.name, counts)
    workers = json.loads(run_cli("workers", "--json").stdout)
    assert any({q.name for q in eight} <= set(x["queues"]) for x in workers), workers
    for q in eight[::3]:  # the dead-letter queue of queues on each master
        out = run_cli("dlq", "list", "-q", q.name, "--json")
        assert out.returncode == 0, out.stderr
        assert [j["status"] for j in json.loads(out.stdout)] == ["dead"]


def test_cluster_url_errors_are_one_line_without_the_password(cli: Any) -> None:
    for url, why in (
        ("redis+cluster://:s3cret@127.0.0.1:1", "cannot reach the cluster"),
        ("redis+cluster://:s3cret@127.0.0.1:x", "HOST:PORT"),
        ("redis+sentinel://:s3cret@127.0.0.1:1", "/SERVICE"),
        ("redis+sentinel://:s3cret@127.0.0.1:1/svc?sentinel_password=hush", "cannot reach"),
    ):
        out = cli("status", env={"FIFOFLOW_URL": url}, timeout=60)
        assert out.returncode in (1, 2), (url, out)
        assert why in out.stderr, (url, out.stderr)
        assert "s3cret" not in out.stderr + out.stdout and "hush" not in out.stderr
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "s3cret" not in redact("redis+cluster://u:s3cret@h:1,h:2")
    assert "hush" not in redact("redis+sentinel://h:1/s?sentinel_password=hush")


def test_a_cluster_url_reaches_every_master(cluster: Any) -> None:
    client = connect(cluster.url)
    try:
        assert len(client.get_primaries()) == 3  # type: ignore[attr-defined]
        for q in cluster.queues_on_every_master(1, "reach"):
            client.set(keys.queue_key(q, keys.Key.META) + "x", "1")  # routed, no MOVED
    finally:
        client.close()
    with pytest.raises(redis.RedisError):
        redis.Redis(port=cluster.nodes[0].port).set("{elsewhere}x", "1")  # plain: MOVED


def test_each_master_loads_the_function_library_on_first_use(cluster: Any) -> None:
    """A master without fifoflow's functions (new, emptied, or a replica promoted before
    they reached it) gets them on its first call, with the call then answered."""
    queues = cluster.queues_on_every_master(1, f"fl-{time.monotonic_ns() % 10**8}-")
    for name in queues:
        node = cluster.node(cluster.master_of(name)).client()
        try:
            node.execute_command("FUNCTION", "FLUSH", "SYNC")
            assert node.execute_command("FUNCTION", "LIST") == []
            q = Queue(name, url=cluster.url)
            try:
                job = q.push("m:f", {"n": 1})
                assert job.status == "queued"
            finally:
                q.close()
            assert len(node.execute_command("FUNCTION", "LIST")) == 1
        finally:
            node.close()
