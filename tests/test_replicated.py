"""``FIFOFLOW_DURABILITY=replicated``: a push or a completion is acknowledged only once a
replica has it (``WAIT 1`` in the same packet); without a replica it is refused with one
line, never acknowledged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterkit
from conftest import run_cli
from fifoflow import NotReplicated, Queue
from fifoflow.records import ClaimRequest, Outcome, nonce
from fifoflow.settings import Settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[clusterkit.Node, clusterkit.Node]]:
    """A primary and its replica (Debian's redis-server on free loopback ports)."""
    why = clusterkit.have("redis-server")
    if why:
        pytest.skip(why)
    p0, p1 = clusterkit.free_ports(2)
    primary = clusterkit.Node(tmp_path / "a", p0, clusterkit._server_args(p0))
    replica = clusterkit.Node(
        tmp_path / "b", p1, clusterkit._server_args(p1, "--replicaof", "127.0.0.1", str(p0))
    )
    try:
        for n in (primary, replica):
            n.start()
        for n in (primary, replica):
            clusterkit.wait_until(n.ping, 20, f"server {n.port} answers")
        c = primary.client()
        clusterkit.wait_until(
            lambda: int(c.info("replication")["connected_slaves"]) >= 1, 30, "replica online"
        )
        c.close()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def _queue(port: int, name: str, **kw: Any) -> Queue:
    return Queue(
        name, url=f"redis://127.0.0.1:{port}", settings=Settings(durability="replicated", **kw)
    )


def test_an_acknowledged_push_and_ack_are_already_on_the_replica(
    pair: tuple[clusterkit.Node, clusterkit.Node],
) -> None:
    primary, replica = pair
    q = _queue(primary.port, "rq")
    r = replica.client()
    try:
        for i in range(50):
            job = q.push("m:f", {"i": i})
            # read at once from the replica: the WAIT before the reply makes it there
            assert r.hget(f"ff:{{rq}}:job:{job.id}", "target") == "m:f", i
        b = q.broker
        job = b.claim("rq", ClaimRequest("w", 1, ["default"], 30.0, nonce())).jobs[0]
        b.complete(job, Outcome("ok", "42"))
        assert r.hget(f"ff:{{rq}}:job:{job.id}", "status") == "succeeded"
    finally:
        q.close()
        r.close()


def test_without_a_replica_a_push_is_refused_with_one_line(
    pair: tuple[clusterkit.Node, clusterkit.Node],
) -> None:
    primary, replica = pair
    replica.stop()
    c = primary.client()
    clusterkit.wait_until(
        lambda: int(c.info("replication")["connected_slaves"]) == 0, 30, "replica gone"
    )
    c.close()
    q = _queue(primary.port, "rq2", replica_timeout=0.2)
    try:
        t0 = time.monotonic()
        with pytest.raises(NotReplicated, match="no replica confirmed"):
            q.push("m:f", {})
        print(f"\nrefused after {time.monotonic() - t0:.2f}s")
    finally:
        q.close()
    out = run_cli(
        "push", "m:f", "-q", "rq3", "--params", "{}",
        env={
            "FIFOFLOW_URL": f"redis://127.0.0.1:{primary.port}",
            "FIFOFLOW_DURABILITY": "replicated",
            "FIFOFLOW_REPLICA_TIMEOUT": "0.2",
        },
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "FIFOFLOW_DURABILITY=local" in out.stderr
    assert "Traceback" not in out.stderr
