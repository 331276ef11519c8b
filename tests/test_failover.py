"""Failovers under load, with ``FIFOFLOW_DURABILITY=replicated``: a Redis Cluster master
SIGKILLed mid-run, and a Sentinel-managed primary SIGKILLed mid-run. Workers and
producers (real processes) ride them: MOVED, READONLY, connection resets and the new
primary's address are handled by the client; the test checks the outcome.

* nothing acknowledged is lost: every push a producer saw acknowledged is in the store
  and ends ``succeeded``;
* no job is recorded ``succeeded`` twice: each queue's success counter equals its number
  of succeeded jobs;
* the time to recover: from the kill to the end of the longest pause in acknowledged
  pushes on the killed primary's queues (printed; run with ``-s`` to see it), and the
  time the promotion took.

The killed node is started again once its replica took over (as an orchestrator would;
under Sentinel with ``--replicaof`` the new primary, where an operator's config would
point): under ``replicated`` a primary without a replica acknowledges nothing, so until
the old node has rejoined as the new primary's replica, pushes and completions there wait.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import clusterkit
from conftest import TESTS, Processes, wait_for
from fifoflow import Queue

pytestmark = pytest.mark.slow

PER_PRODUCER = 300
KILL_AFTER = 150  # acknowledged pushes (both producers) before the kill


def _acks(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        if p.exists():
            for line in p.read_text().splitlines():
                if line.strip():
                    out.append(json.loads(line))
    return out


def _run(
    url: str,
    queues: list[str],
    procs: Processes,
    tmp: Path,
    kill: Any,
    victim_queues: set[str],
    recovered: Any,
) -> dict[str, Any]:
    """4 workers x 4 slots and 2 producers on ``queues``; ``kill()`` once KILL_AFTER pushes
    are acknowledged (returns the kill time), ``recovered()`` after it (waits for the
    promotion, returns its time, starts the killed node again). Returns the figures,
    after checking the outcome."""
    env = {
        "FIFOFLOW_URL": url,
        "FIFOFLOW_DURABILITY": "replicated",
        "FIFOFLOW_REPLICA_TIMEOUT": "1",
        "FIFOFLOW_FAILOVER_SECONDS": "60",
        "FIFOFLOW_RETRY_BASE_SECONDS": "0.05",
    }
    runlog = tmp / "runs.log"
    qargs = [a for q in queues for a in ("-q", q)]
    workers = []
    for i in range(4):
        fh = open(tmp / f"worker-{i}.log", "w")  # noqa: SIM115 - the child keeps it
        workers.append(
            procs.worker(
                "fftest_targets", *qargs, "--concurrency", "4", "--lease", "3",
                env=env, stdout=subprocess.DEVNULL, stderr=fh,
            )
        )  # fmt: skip
        fh.close()
    first = Queue(queues[0], url=url)
    try:  # every worker up before the load starts (a loaded machine starts them slowly)
        wait_for(lambda: len(first.broker.live_workers()) >= 4, timeout=60, interval=0.1)
    finally:
        first.close()
    outs = [tmp / f"producer-{i}.jsonl" for i in range(2)]
    producers = []
    for i, out in enumerate(outs):
        fh = open(out, "w")  # noqa: SIM115 - the child keeps it
        producers.append(
            procs.start(
                sys.executable, str(TESTS / "fftest_producer.py"), url, str(runlog),
                str(PER_PRODUCER), str(i * PER_PRODUCER), *queues,
                env=env, stdout=fh, stderr=open(tmp / f"producer-{i}.err", "w"),  # noqa: SIM115
            )
        )  # fmt: skip
        fh.close()
    wait_for(lambda: len(_acks(outs)) >= KILL_AFTER, timeout=120, interval=0.05)
    killed_at = kill()
    promoted_at = recovered()
    for p in producers:
        p.wait(240)
    acks = _acks(outs)
    acked = [a for a in acks if "id" in a]
    refused = [a for a in acks if "error" in a]
    # Recovered: the end of the longest pause in acknowledgements on the killed primary's
    # queues that ends after the kill (a push in flight at the kill may land just after).
    times = sorted(a["t"] for a in acked if a["queue"] in victim_queues)
    gaps = [(b - a, b) for a, b in itertools.pairwise(times) if b > killed_at]
    assert gaps, "no push was acknowledged again on the killed primary's queues"
    recover = max(gaps)[1] - killed_at

    check = {q: Queue(q, url=url) for q in queues}
    lost = [a for a in acked if check[a["queue"]].record(a["id"]) is None]
    assert not lost, f"{len(lost)} acknowledged pushes lost, e.g. {lost[:3]}"

    def all_done() -> bool:
        for w in workers:
            assert w.poll() is None, f"a worker exited ({w.returncode})"
        return all(check[a["queue"]].job(a["id"]).status == "succeeded" for a in acked)

    try:
        wait_for(all_done, timeout=180, interval=0.5)
        succeeded = 0
        for q in check.values():
            ids = q.job_ids("succeeded")
            stats = q.stats()
            assert stats.get("succeeded", 0) == len(ids), (q.name, stats, len(ids))
            succeeded += len(ids)
        runs = [json.loads(line)["n"] for line in runlog.read_text().splitlines()]
    finally:
        for q in check.values():
            q.close()
    return {
        "acknowledged": len(acked),
        "refused": len(refused),
        "lost": len(lost),
        "succeeded": succeeded,
        "runs": len(runs),
        "ran_twice": len(runs) - len(set(runs)),
        "promoted_s": round(promoted_at - killed_at, 2),
        "recover_s": round(recover, 2),
    }


@pytest.mark.timeout(420)
def test_a_cluster_master_killed_under_load_loses_nothing_acknowledged(
    procs: Processes, tmp_path: Path
) -> None:
    why = clusterkit.have("redis-server", "redis-cli")
    if why:
        pytest.skip(why)
    cluster = clusterkit.Cluster()
    try:
        queues = cluster.queues_on_every_master(3, "fo")[:8]  # 8 queues over 3 masters
        victim = cluster.master_of(queues[0])
        victim_queues = {q for q in queues if cluster.master_of(q) == victim}
        assert len({cluster.master_of(q) for q in queues}) == 3

        def kill() -> float:
            t = time.time()
            cluster.kill(victim)
            return t

        def recovered() -> float:
            clusterkit.wait_until(
                lambda: cluster.master_of(queues[0]) != victim, 60, "a replica took over"
            )
            t = time.time()
            cluster.restart(victim)  # it rejoins as the new master's replica
            return t

        figures = _run(cluster.url, queues, procs, tmp_path, kill, victim_queues, recovered)
    finally:
        cluster.close()
    print(f"\nFAILOVER cluster: {figures}")
    assert figures["acknowledged"] >= KILL_AFTER
    assert figures["succeeded"] >= figures["acknowledged"]


@pytest.mark.timeout(300)
def test_a_sentinel_primary_killed_under_load_loses_nothing_acknowledged(
    procs: Processes, tmp_path: Path
) -> None:
    why = clusterkit.have("redis-server", "redis-sentinel")
    if why:
        pytest.skip(why)
    group = clusterkit.SentinelGroup()
    try:
        queues = [f"so{i}" for i in range(4)]
        victim = group.primary_port()

        def kill() -> float:
            t = time.time()
            group.server(victim).kill()
            return t

        def recovered() -> float:
            clusterkit.wait_until(
                lambda: group.primary_port() != victim, 60, "the sentinels promoted the replica"
            )
            t = time.time()
            node = group.server(victim)  # back as the new primary's replica, as an operator
            node.args += ["--replicaof", "127.0.0.1", str(group.primary_port())]  # would
            node.start()
            return t

        figures = _run(group.url, queues, procs, tmp_path, kill, set(queues), recovered)
    finally:
        group.close()
    print(f"\nFAILOVER sentinel: {figures}")
    assert figures["acknowledged"] >= KILL_AFTER
    assert figures["succeeded"] >= figures["acknowledged"]
