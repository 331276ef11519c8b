"""Dependencies, fan-out/fan-in, chains, DAG files, result wake-ups, --max-jobs, per-job
result TTL and caller-chosen ids (issue: workflows)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import fifoflow
from conftest import Processes, run_cli, wait_for
from fifoflow import Queue, UsageError
from fifoflow.keys import Field

T = "fftest_targets"


def records(q: Queue) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in q.jobs()}


def raw(q: Queue, job_id: str, name: str) -> str | None:
    value = q.client.hget(f"ff:{{{q.name}}}:job:{job_id}", name)
    return None if value is None else str(value)


def test_a_job_waits_for_its_parents_then_takes_its_own_place(vqueue: Queue) -> None:
    q = vqueue
    parent = q.push(f"{T}:add", {"x": 1})
    child = q.push(f"{T}:add", {"x": 2}, depends_on=[parent])
    later = q.push(f"{T}:add", {"x": 3})
    assert child.status == "waiting"
    assert q.stats()["waiting"] == 1
    assert q.job_ids("waiting") == [child.id]
    # Run the parent by hand; the child then enters the line ahead of `later`, which was
    # pushed after it: its place comes from its push, not from when it became ready.
    from qops import claim, complete

    _, [c] = claim(q, "w", 1, ["default"], 30)
    assert c.id == parent.id
    complete(q, c, "ok", "1")
    assert child.status == "queued"
    _, claimed = claim(q, "w", 2, ["default"], 30)
    assert [j.id for j in claimed] == [child.id, later.id]
    assert child.to_dict()["depends_on"] == [parent.id]


def test_a_chord_of_100_receives_every_result_in_push_order(
    vqueue: Queue, procs: Processes
) -> None:
    q = vqueue
    group = q.push_many(f"{T}:step", [{"n": i, "seconds": 0.001 * (i % 7)} for i in range(100)])
    fan_in = q.push(f"{T}:total", depends_on=group, gather=True)
    procs.worker(T, "-c", "4", "--burst")
    result = fan_in.result(timeout=90)
    assert result["count"] == 100
    assert result["results"] == list(range(100))  # push order, whatever the finish order
    finished = max(r["finished_at"] for r in (j.to_dict() for j in group))
    assert fan_in.to_dict()["started_at"] >= finished


def test_a_chain_passes_each_result_as_input(vqueue: Queue, procs: Processes) -> None:
    steps = [(f"{T}:add", {"x": 2, "y": 3}), (f"{T}:echo", {"k": 1}), (f"{T}:echo", None)]
    jobs = fifoflow.chain(vqueue, steps)
    procs.worker(T, "--burst")
    assert jobs[-1].result(timeout=60) == {"input": {"k": 1, "input": 5}}


def dag_jobs(q: Queue, log: Path) -> dict[str, Any]:
    """A 3-level DAG of 50 jobs: 10 sources, 30 in the middle (3 parents each), 10 sinks
    (4 parents each, gathering); one source fails, so its descendants die with it."""
    srcs = [
        q.push(f"{T}:step", {"n": i, "seconds": 0.05, "fail": i == 3}, retries=0) for i in range(10)
    ]
    mids = [
        q.push(
            f"{T}:step",
            {"n": 100 + i, "seconds": 0.1},
            depends_on=[srcs[(i + k) % 10] for k in range(3)],
        )
        for i in range(30)
    ]
    sinks = [
        q.push(
            f"{T}:total",
            {"n": 200 + i},
            depends_on=[mids[(3 * i + k) % 30] for k in range(4)],
            gather=True,
        )
        for i in range(10)
    ]
    return {"srcs": srcs, "mids": mids, "sinks": sinks}


def test_a_dag_of_50_jobs_over_two_workers_respects_every_dependency(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    q = vqueue
    dag = dag_jobs(q, tmp_path / "log")
    everything = dag["srcs"] + dag["mids"] + dag["sinks"]
    env = {"FIFOFLOW_LEASE_SECONDS": "3"}
    victim = procs.worker(T, "-c", "3", env=env)
    procs.worker(T, "-c", "3", env=env)
    # Kill one worker mid-DAG (once some middle jobs ran), and nothing is lost.
    wait_for(lambda: sum(j.status == "succeeded" for j in dag["mids"]) >= 3, timeout=60)
    os.killpg(victim.pid, signal.SIGKILL)
    final = ("succeeded", "dead")
    wait_for(lambda: all(j.status in final for j in everything), timeout=120, interval=0.2)

    recs = records(q)
    by_id = {j.id: recs[j.id] for j in everything}
    failed = dag["srcs"][3].id
    doomed = {failed}
    for layer in ("mids", "sinks"):  # descendants of the failed source
        for j in dag[layer]:
            if set(by_id[j.id]["depends_on"]) & doomed:
                doomed.add(j.id)
    for job_id, rec in by_id.items():
        if job_id in doomed and job_id != failed:
            assert rec["status"] == "dead", rec
            assert rec["error"].startswith("DependencyFailed: parent "), rec["error"]
            assert rec["attempts"] == 0  # never started
        elif job_id != failed:
            assert rec["status"] == "succeeded", rec
            for parent in rec["depends_on"]:  # started only once every parent finished
                assert rec["started_at"] >= by_id[parent]["finished_at"]
    assert by_id[failed]["status"] == "dead"
    # Nothing lost: every job is in exactly one final state, and each success once.
    stats = q.stats()
    assert stats["succeeded"] + stats["dead"] == 50
    assert stats["succeeded"] == 50 - len(doomed)
    # FIFO among ready jobs: two jobs both ready before either was claimed were claimed
    # in push order (their ids), whatever order their parents finished in.
    ready = {i: float(raw(q, i, Field.QUEUED_AT) or by_id[i]["created_at"]) for i in by_id}
    claimed = [r for r in by_id.values() if r["claim_seq"] is not None]
    inversions = [
        (a["id"], b["id"])
        for a in claimed
        for b in claimed
        if a["id"] < b["id"]
        and a["claim_seq"] > b["claim_seq"]
        and a["lost"] == 0
        and b["lost"] == 0
        and max(ready[a["id"]], ready[b["id"]]) < b["started_at"]
    ]
    assert not inversions, inversions
    sink = next(j for j in dag["sinks"] if j.id not in doomed)
    assert len(sink.to_dict()["result"]["results"]) == 4


def test_cancelling_a_waiting_job_settles_its_children(vqueue: Queue) -> None:
    q = vqueue
    root = q.push(f"{T}:add", {"x": 1})
    mid = q.push(f"{T}:add", {"x": 1}, depends_on=[root])
    leaf = q.push(f"{T}:add", {"x": 1}, depends_on=[mid])
    runs = q.push(f"{T}:echo", depends_on=[mid], on_parent_failure="run", gather=True)
    assert mid.cancel()
    assert mid.status == "cancelled"
    assert leaf.status == "dead" and "parent " + mid.id + " cancelled" in leaf.error
    assert runs.status == "queued"  # its one parent ended: it runs anyway
    assert root.status == "queued"  # a child's end never touches its parents


def test_pushing_after_a_failed_parent_is_dead_at_once(vqueue: Queue) -> None:
    q = vqueue
    parent = q.push(f"{T}:add", {"x": 1})
    assert parent.cancel()
    child = q.push(f"{T}:add", {"x": 1}, depends_on=[parent])
    assert child.status == "dead" and "DependencyFailed" in child.error
    with pytest.raises(fifoflow.JobNotFound):
        q.push(f"{T}:add", {"x": 1}, depends_on=["0" * 18])
    assert q.stats()["queued"] == 0  # nothing of the refused push


def test_result_wakes_on_the_end_instead_of_polling(vqueue: Queue, tmp_path: Path) -> None:
    q = vqueue
    release = tmp_path / "go"
    job = q.push(f"{T}:hold", {"marker": str(release)})
    from qops import claim, complete

    _, [c] = claim(q, "w", 1, ["default"], 30)
    client = q.client
    before = int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
    t0 = time.monotonic()

    def finish_later() -> None:
        time.sleep(2.0)
        complete(q, c, "ok", '"done"')

    import threading

    threading.Thread(target=finish_later, daemon=True).start()
    assert job.result(timeout=30) == "done"
    waited = time.monotonic() - t0
    reads = int(client.info("commandstats")["cmdstat_hgetall"]["calls"]) - before
    print(f"\nwaited {waited:.2f}s with {reads} record reads")
    assert waited >= 2.0
    # A look at start, about one a second as a safety net, one at the end: never a poll
    # every few milliseconds (other tests share the server: allow some of theirs).
    assert reads <= 12, reads


def test_max_jobs_stops_the_worker_after_exactly_n(vqueue: Queue, procs: Processes) -> None:
    jobs = vqueue.push_many(f"{T}:add", [{"x": i} for i in range(10)])
    w = procs.worker(T, "-c", "3", "--max-jobs", "4")
    assert w.wait(60) == 0
    done = [j for j in jobs if j.status == "succeeded"]
    assert len(done) == 4
    assert [j.id for j in done] == [j.id for j in jobs[:4]]  # the first four, FIFO
    assert vqueue.stats()["queued"] == 6


def test_a_job_s_own_result_ttl(vqueue: Queue, procs: Processes) -> None:
    short = vqueue.push(f"{T}:add", {"x": 1}, result_ttl=1)
    normal = vqueue.push(f"{T}:add", {"x": 2})
    procs.worker(T, "--burst").wait(60)
    assert normal.result(timeout=5) == 2
    wait_for(lambda: vqueue.record(short.id) is None, timeout=10)
    assert vqueue.record(normal.id) is not None


def test_caller_chosen_ids_work_wherever_an_id_does(vqueue: Queue, procs: Processes) -> None:
    q = vqueue
    first = q.push(f"{T}:add", {"x": 7}, job_id="nightly-2026-11-30")
    assert q.job("nightly-2026-11-30").id == first.id
    with pytest.raises(UsageError, match="taken"):
        q.push(f"{T}:add", {"x": 1}, job_id="nightly-2026-11-30")
    with pytest.raises(UsageError, match="one job"):
        q.push_many(f"{T}:add", [{"x": 1}, {"x": 2}], job_id="two")
    after = q.push(f"{T}:echo", depends_on=["nightly-2026-11-30"], gather=True)
    procs.worker(T, "--burst")
    assert after.result(timeout=60) == {"results": [7]}
    r = run_cli("job", "nightly-2026-11-30", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["alias"] == "nightly-2026-11-30"


def test_a_target_fans_out_from_inside(vqueue: Queue, procs: Processes) -> None:
    parent = vqueue.push(f"{T}:fan_out", {"n": 3})
    procs.worker(T, "-c", "2", "--burst")
    ids = parent.result(timeout=60)
    assert [vqueue.job(i).result(timeout=60) for i in ids] == [0, 1, 2]


def test_push_dag_pushes_a_checked_dag(vqueue: Queue, tmp_path: Path, procs: Processes) -> None:
    dag = {
        "jobs": [
            {"id": "prep", "target": f"{T}:add", "params": {"x": 1}},
            {"id": "train-a", "target": f"{T}:add", "params": {"x": 2}, "depends_on": ["prep"]},
            {"id": "train-b", "target": f"{T}:add", "params": {"x": 3}, "depends_on": ["prep"]},
            {"id": "report", "target": f"{T}:total", "depends_on": ["train-a", "train-b"],
             "gather": True},
        ]
    }  # fmt: skip
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(dag, indent=2))
    r = run_cli("push-dag", str(path), "--json")
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert list(ids) == ["prep", "train-a", "train-b", "report"]
    procs.worker(T, "-c", "2", "--burst")
    report = vqueue.job(ids["report"])
    assert report.result(timeout=60)["results"] == [2, 3]


@pytest.mark.parametrize(
    ("jobs", "line", "message"),
    [
        (
            [
                {"id": "a", "target": "x:y", "depends_on": ["b"]},
                {"id": "b", "target": "x:y", "depends_on": ["a"]},
            ],
            None,
            "cycle",
        ),
        (
            [{"id": "a", "target": "x:y"}, {"id": "b", "target": "x:y", "depends_on": ["nope"]}],
            7,
            "unknown id 'nope'",
        ),
        ([{"id": "a", "target": "x:y"}, {"id": "a", "target": "x:y"}], 7, "used twice"),
        ([{"id": "a", "target": "not a target"}], 3, "invalid target"),
        ([{"id": "a", "target": "x:y", "retries": -1}], 3, "retries"),
        ([{"id": "a", "target": "x:y", "colour": "red"}], 3, "unknown option"),
    ],
)  # fmt: skip
def test_push_dag_refuses_bad_files_with_the_line(
    vqueue: Queue, tmp_path: Path, jobs: list[dict[str, Any]], line: int | None, message: str
) -> None:
    path = tmp_path / "dag.json"
    path.write_text(json.dumps({"jobs": jobs}, indent=2))
    r = run_cli("push-dag", str(path))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message in lines[0]
    if line is not None:
        assert f"line {line}:" in lines[0], lines[0]
    assert vqueue.broker.queues().count(vqueue.name) == 0 or vqueue.stats()["queued"] == 0


def test_the_dag_example_runs(vqueue: Queue, procs: Processes) -> None:
    folder = Path(__file__).parent.parent / "examples" / "dag"
    r = run_cli("push-dag", str(folder / "dag.json"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)["report"]
    procs.worker("pipeline", "-c", "2", "--burst", cwd=str(folder))
    result = vqueue.job(report).result(timeout=60)
    assert result == {"runs": 2, "best_lr": 0.01, "best_accuracy": result["best_accuracy"]}
    assert 0.9 < result["best_accuracy"] <= 1
