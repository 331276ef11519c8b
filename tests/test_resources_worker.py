"""Resources end to end: real workers (process slots) pinned to simulated GPU ids, the CLI's
flags, `fifoflow workers` and `fifoflow status` explaining a waiting head."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, run_cli, wait_for
from fifoflow import Queue
from fifoflow.errors import UsageError
from fifoflow.records import ClaimRequest, nonce
from fifoflow.resources import Capacity, parse_gpus, parse_mem, validate_need

pytestmark = pytest.mark.timeout(120)


def rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def all_done(q: Queue) -> bool:
    c = q.stats()
    return c["queued"] + c["running"] + c["delayed"] == 0


def test_four_gpus_jobs_of_1_2_4_1_1_get_disjoint_devices(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "devices.jsonl"
    sizes = [1, 2, 4, 1, 1]
    jobs = [
        vqueue.push(
            "fftest_gpu:record",
            {"out": str(out), "hold": 0.6},
            resources={"gpu": g},
            expected_seconds=1.0,
        )
        for g in sizes
    ]
    w = procs.worker("fftest_gpu", "--processes", "--gpus", "0,1,2,3", "--cpus", "2", "--burst")
    wait_for(lambda: all_done(vqueue) and len(rows(out)) == 5, timeout=90)
    assert w.wait(30) == 0
    seen = rows(out)
    assert all(j.status == "succeeded" for j in jobs)
    assert sorted(len(r["devices"].split(",")) for r in seen) == sorted(sizes)
    for r in seen:
        ids = r["devices"].split(",")
        assert set(ids) <= {"0", "1", "2", "3"} and len(set(ids)) == len(ids)
        assert r["resources"]["gpu_ids"] == ids and r["resources"]["gpu"] == len(ids)
    overlapping = 0
    for i, a in enumerate(seen):
        for b in seen[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time
                overlapping += 1
                assert not set(a["devices"].split(",")) & set(b["devices"].split(",")), (a, b)
    assert overlapping >= 1  # the check compared jobs that did share the machine


def test_gpus_need_process_slots_and_thread_slots_refuse(vqueue: Queue) -> None:
    r = run_cli("worker", "fftest_gpu", "--gpus", "0,1")
    assert r.returncode == 2
    assert "--gpus needs --processes" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("worker", "fftest_gpu", "--strict-fifo")
    assert r.returncode == 2 and "declare capacity too" in r.stderr
    r = run_cli("worker", "fftest_gpu", "--cpus", "2", "-q", "a", "-q", "b")
    assert r.returncode == 2 and "serves one queue" in r.stderr


@pytest.mark.parametrize("strict", [False, True])
def test_backfill_lets_only_what_cannot_delay_the_head_pass(vqueue: Queue, strict: bool) -> None:
    """4 GPUs, a 2-GPU job running (expected 100 s): a 4-GPU head waits for it. Behind the
    head, a 1-GPU job expected to end within 10 s may start (it ends before the head's
    reservation); one of 1000 s may not, nor (strict FIFO) anything."""
    b = vqueue.broker
    cap = Capacity(("0", "1", "2", "3"), {"cpu": 4.0})
    b.register_capacity(vqueue.name, "w", cap, 8, ["default"], "h", strict, 60)

    def claim(n: int) -> list[str]:
        req = ClaimRequest("w", n, ["default"], 60.0, nonce(), resources=True)
        return [j.id for j in b.claim(vqueue.name, req).jobs]

    first = vqueue.push("m:f", resources={"gpu": 2}, expected_seconds=100)
    assert claim(1) == [first.id]
    head = vqueue.push("m:f", resources={"gpu": 4}, expected_seconds=50)
    long = vqueue.push("m:f", resources={"gpu": 1}, expected_seconds=1000)
    short = vqueue.push("m:f", resources={"gpu": 1}, expected_seconds=10)
    got = claim(4)
    assert got == ([] if strict else [short.id])
    assert head.status == "queued" and long.status == "queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "-1"], "invalid --gpus"),
        (["--mem", "lots"], "invalid memory"),
        (["--resource", "Licence=2"], "invalid resource name"),
        (["--resource", "licence"], "expected NAME=AMOUNT"),
        (["--cpus", "-2"], "amount must be >= 0"),
    ],
)
def test_bad_capacity_flags_exit_2(vqueue: Queue, args: list[str], message: str) -> None:
    r = run_cli("worker", "fftest_gpu", "--processes", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "-1"], "amount must be >= 0"),
        (["--mem", "16Q"], "invalid memory"),
        (["--resource", "x y=1"], "invalid resource name"),
        (["--resource", "licence=many"], "is not a number"),
        (["--resource", "slots=2"], "'slots' is not declared"),
    ],
)
def test_bad_push_resources_exit_2(vqueue: Queue, args: list[str], message: str) -> None:
    r = run_cli("push", "fftest_gpu:record", "--params", "{}", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert vqueue.stats()["queued"] == 0


def test_push_flags_store_what_a_job_needs(vqueue: Queue) -> None:
    r = run_cli(
        "push", "fftest_gpu:record", "--params", "{}", "--gpus", "2", "--mem", "16G",
        "--cpus", "4", "--resource", "licence=2", "--expected", "90",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = vqueue.record(r.stdout.strip())
    assert job is not None
    assert job["resources"] == {"gpu": 2, "mem_gb": 16, "cpu": 4, "licence": 2}
    assert job["expected_seconds"] == 90


def test_parsers() -> None:
    assert parse_mem("16G") == 16 and parse_mem("512M") == 0.5 and parse_mem("2T") == 2048
    assert parse_gpus("0,1,2,3") == ["0", "1", "2", "3"] and parse_gpus("none") == []
    assert validate_need({"gpu": 1, "cpu": 0.5}) == '{"cpu":0.5,"gpu":1}'
    assert validate_need(None) == "" and validate_need({"cpu": 0}) == ""
    for bad in ({"gpu": 1.5}, {"GPU": 1}, {"cpu": -1}, {"cpu": float("nan")}, {"cpu": True}):
        with pytest.raises(UsageError):
            validate_need(bad)


def test_gpus_auto_reads_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert parse_gpus("auto") == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert parse_gpus("auto") == []


def test_status_explains_a_waiting_head_and_workers_show_use(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "devices.jsonl"
    # Two simulated hosts: a (2 GPUs) and b (4 GPUs). A long 2-GPU job holds b's 0,1 and
    # another holds a's both; then a 4-GPU head cannot start anywhere.
    for name, gpus in (("host-a", "0,1"), ("host-b", "0,1,2,3")):
        procs.worker(
            "fftest_gpu", "--processes", "--gpus", gpus, "--cpus", "2", "--name", name,
        )  # fmt: skip
    wait_for(lambda: len(vqueue.broker.resource_use(vqueue.name)) == 2, timeout=30)
    for _ in range(2):
        vqueue.push("fftest_gpu:record", {"out": str(out), "hold": 60}, resources={"gpu": 2})
    wait_for(lambda: vqueue.stats()["running"] == 2, timeout=30)
    head = vqueue.push("fftest_gpu:record", {"out": str(out), "hold": 0}, resources={"gpu": 4})
    never = vqueue.push("fftest_gpu:record", {"out": str(out)}, resources={"gpu": 8})
    time.sleep(0.5)  # nothing may start: both workers are full for the head
    assert head.status == "queued" and never.status == "queued"

    r = run_cli("status")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "head needs gpu=4, largest free: gpu=2 on " in text, r.stdout
    assert re.search(rf"head needs gpu=4, largest free: gpu=2 on \S+ \(job {head.id}", text)

    r = run_cli("status", "--json")
    assert any(f"(job {head.id}, pool default)" in w for w in json.loads(r.stdout)["waiting"])

    r = run_cli("workers", "--json")
    assert r.returncode == 0, r.stderr
    shown = {w["name"]: w["resources"] for w in json.loads(r.stdout)}
    used = {n: re.match(r"gpu (\d+)/(\d+)", s).groups() for n, s in shown.items()}  # type: ignore[union-attr]
    assert {n: c for n, (_, c) in used.items()} == {"host-a": "2", "host-b": "4"}
    assert sum(int(u) for u, _ in used.values()) == 4, shown
    r = run_cli("workers", env={"COLUMNS": "250"})
    assert re.search(r"gpu [024]/4 \(free [0-9,-]+\)", r.stdout), r.stdout


def test_a_job_no_worker_can_hold_is_named_and_does_not_block(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "devices.jsonl"
    never = vqueue.push("fftest_gpu:record", {"out": str(out)}, resources={"gpu": 8})
    small = vqueue.push("fftest_gpu:record", {"out": str(out), "hold": 0}, resources={"gpu": 1})
    procs.worker("fftest_gpu", "--processes", "--gpus", "0,1", "--name", "host-c")
    wait_for(lambda: small.status == "succeeded", timeout=60)
    assert never.status == "queued"
    r = run_cli("status")
    text = " ".join(r.stdout.split())
    assert "head needs gpu=8, more than any live worker has: largest gpu=2 on" in text, r.stdout


def test_capacity_round_trip(vqueue: Queue) -> None:
    cap = Capacity.declare(["0", "1"], 4, 32, {"licence": 1})
    vqueue.broker.register_capacity(vqueue.name, "w1", cap, 6, ["default"], "h", False, 30)
    (w,) = vqueue.broker.resource_use(vqueue.name)
    assert w.cap == {"gpu": 2, "cpu": 4, "mem_gb": 32, "licence": 1, "slots": 6}
    assert w.free_ids == ["0", "1"]
    vqueue.broker.register_capacity(vqueue.name, "w1", cap, 6, ["default"], "h", False, 0)
    assert vqueue.broker.resource_use(vqueue.name) == []


def test_gpu_smoke_example_skips_clearly_without_a_gpu(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "gpu" / "smoke.py"
    r = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, whatever the machine has
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("SKIP: no GPU on this machine"), r.stdout


@pytest.mark.parametrize("by_resources", [False, True])
def test_a_claim_carries_share_tags_and_queued_time(vqueue: Queue, by_resources: bool) -> None:
    """One claim reply layout for both claims (plain and by resources), and for a re-sent
    claim: each job's share of resources, its tags, and when it entered the line (never
    re-queued: its push time, the rank in its id, as its record says)."""
    b = vqueue.broker
    if by_resources:
        cap = Capacity(("0", "1"), {"cpu": 2.0})
        b.register_capacity(vqueue.name, "w", cap, 4, ["default"], "h", False, 60)
    need = {"gpu": 1} if by_resources else None
    tagged = vqueue.push("m:f", {"n": 1}, tags=["a", "b c"], resources=need)
    plain = vqueue.push("m:f")
    req = ClaimRequest("w", 2, ["default"], 60.0, nonce(), resources=by_resources)
    first = b.claim(vqueue.name, req).jobs
    again = b.claim(vqueue.name, req, resent=True).jobs
    for claimed in (first, again):
        assert [j.id for j in claimed] == [tagged.id, plain.id]
        one, two = claimed
        assert json.loads(one.params) == {"n": 1} and one.attempts == 1
        assert one.tag_list() == ["a", "b c"] and two.tag_list() == []
        for job, j in ((tagged, one), (plain, two)):
            assert j.queued_at == pytest.approx(vqueue.record(job.id)["created_at"], abs=1e-5)
        if by_resources:
            assert len(json.loads(one.alloc)["gpu_ids"]) == 1
            assert "gpu_ids" not in json.loads(two.alloc)
        else:
            assert one.alloc == two.alloc == ""


def test_a_burst_worker_leaves_when_what_is_queued_can_never_fit_it(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    out = tmp_path / "devices.jsonl"
    big = vqueue.push("fftest_gpu:record", {"out": str(out)}, resources={"gpu": 4})
    small = vqueue.push("fftest_gpu:record", {"out": str(out)}, resources={"gpu": 1})
    w = procs.worker("fftest_gpu", "--processes", "--gpus", "0,1", "--cpus", "1", "--burst")
    # The 1-GPU job behind the head fits and runs; the 4-GPU head never can: the burst ends.
    assert w.wait(90) == 0
    assert small.status == "succeeded"
    assert big.status == "queued"
    assert w.stderr is not None
    assert "1 queued job(s) need more than this worker has" in w.stderr.read()
