"""Cancelling a running job: thread slots stop cooperatively, process slots terminate the
child; the job ends cancelled and is never retried (issue: Prefect and cancellation)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import Processes, run_cli, wait_for
from fifoflow import Queue

T = "fftest_targets"


def running(q: Queue, job_id: str) -> bool:
    rec = q.record(job_id)
    return rec is not None and rec["status"] == "running"


def test_a_running_thread_job_stops_when_cancelled(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job = vqueue.push(f"{T}:cooperative", {"marker": str(marker)}, retries=3)
    behind = vqueue.push(f"{T}:add", {"x": 1})
    procs.worker(T, "-c", "1")
    wait_for(lambda: marker.exists() and running(vqueue, job.id), timeout=30)
    t0 = time.monotonic()
    r = run_cli("cancel", job.id)
    assert r.returncode == 0, r.stderr
    assert "cancelling" in r.stdout
    wait_for(lambda: job.status == "cancelled", timeout=30)
    print(f"\nthread job cancelled {time.monotonic() - t0:.2f}s after the cancel")
    rec = job.to_dict()
    assert rec["attempts"] == 1  # never retried
    assert rec["error"].startswith("Cancelled: ")
    assert behind.result(timeout=30) == 1  # the slot goes on


def test_a_running_process_job_is_terminated_when_cancelled(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    job = vqueue.push(f"{T}:stubborn", {"marker": str(marker)}, retries=3)
    procs.worker(T, "-c", "1", "--processes")
    wait_for(lambda: marker.exists() and running(vqueue, job.id), timeout=60)
    child = int(marker.read_text())
    t0 = time.monotonic()
    assert vqueue.cancel(job.id)
    wait_for(lambda: job.status == "cancelled", timeout=30)
    print(f"\nprocess job cancelled {time.monotonic() - t0:.2f}s after the cancel")
    rec = job.to_dict()
    assert rec["attempts"] == 1 and "died" in rec["error"], rec["error"]

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=10)  # SIGTERM ended the job's process


def test_a_cancelled_job_whose_worker_dies_is_cancelled_not_run_again(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    job = vqueue.push(f"{T}:stubborn", {"marker": str(marker)}, retries=3)
    w = procs.worker(T, "-c", "1", env={"FIFOFLOW_LEASE_SECONDS": "2"})
    wait_for(lambda: marker.exists() and running(vqueue, job.id), timeout=30)
    os.killpg(w.pid, signal.SIGSTOP)  # frozen: it hears nothing, its lease runs out
    try:
        assert vqueue.cancel(job.id)
        procs.worker(T, "-c", "1", env={"FIFOFLOW_LEASE_SECONDS": "2"})
        wait_for(lambda: job.status == "cancelled", timeout=30)
    finally:
        os.killpg(w.pid, signal.SIGKILL)
    rec = job.to_dict()
    assert rec["attempts"] == 1 and rec["lost"] == 1


def test_a_job_that_succeeds_before_it_hears_the_cancel_keeps_its_result(
    vqueue: Queue,
) -> None:
    from qops import claim, complete

    job = vqueue.push(f"{T}:add", {"x": 1})
    _, [c] = claim(vqueue, "w", 1, ["default"], 30)
    assert vqueue.cancel(job.id)  # running: being cancelled
    assert complete(vqueue, c, "ok", "1").outcome == "succeeded"
    assert job.result(timeout=1) == 1


def test_a_failure_after_a_cancel_is_cancelled_not_retried(vqueue: Queue) -> None:
    from qops import claim, complete

    job = vqueue.push(f"{T}:add", {"x": 1}, retries=5)
    _, [c] = claim(vqueue, "w", 1, ["default"], 30)
    assert vqueue.cancel(job.id)
    assert complete(vqueue, c, "fail", "ValueError: x").outcome == "cancelled"
    assert job.status == "cancelled" and job.attempts == 1
    assert vqueue.cancel(job.id)  # cancelled already: still cancelled
    done = vqueue.push(f"{T}:add", {"x": 1})
    _, [c] = claim(vqueue, "w", 1, ["default"], 30)
    complete(vqueue, c, "ok", "1")
    assert vqueue.cancel(done.id) is False  # finished: nothing to cancel
    r = run_cli("cancel", done.id, "--queue", vqueue.name)
    assert r.returncode == 1 and "already finished" in r.stderr
