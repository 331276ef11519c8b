"""Cancels of Prefect mode's process slots (``--prefect --processes``), against a real
Prefect API (the local ephemeral one, a temporary PREFECT_HOME) and a real Valkey.

A process slot's child run is known to the dispatcher while it runs, so:

* a cancel of that run through the Prefect API (what the UI does) cancels the job: its
  process is terminated, the job ends ``cancelled`` after 1 attempt, never retried, and the
  run ends Cancelled;
* ``fifoflow cancel`` of the running job terminates its process and ends the run Cancelled;
* a process killed at the job's timeout leaves its run Crashed, not Running.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, wait_for
from fifoflow import Queue
from fifoflow.settings import Settings
from test_prefect_worker import (  # noqa: F401 - the fixtures
    children_of,
    prefect_api,
    prefect_home,
    run_in_thread,
)

pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.timeout(180)]

T = "fftest_targets"


def start_worker(q: Queue, url: str) -> tuple[Any, threading.Thread]:
    """A one-slot ``--prefect --processes`` worker in burst mode, running in a thread."""
    from fifoflow.prefect import PrefectWorker

    worker = PrefectWorker(
        [q.name],
        [T],
        concurrency=1,
        url=url,
        grace=5,
        processes=True,
        settings=Settings(retry_base_seconds=0.05, retry_max_seconds=0.2),
    )
    thread = threading.Thread(target=run_in_thread, args=(worker, 150), name="ff-test-worker")
    thread.start()
    return worker, thread


def runs_of(client: Any, worker: Any, job_id: str) -> list[Any]:
    """The job's child runs (named ``JOB-tryN``), oldest first."""
    if worker.flow_run_id is None:
        return []
    runs = [r for r in children_of(client, worker.flow_run_id) if r.name.startswith(job_id)]
    return sorted(runs, key=lambda r: r.created)


def running_run(client: Any, worker: Any, job_id: str) -> Any:
    """The job's first child run once it is Running (None before)."""
    runs = runs_of(client, worker, job_id)
    return runs[0] if runs and runs[0].state.type.value == "RUNNING" else None


def running_process(client: Any, worker: Any, job_id: str, marker: Path) -> tuple[Any, int]:
    """The job's child run once Running, and the pid of the slot process running it (the
    ``stubborn`` target writes it to ``marker``)."""
    run = wait_for(lambda: running_run(client, worker, job_id), timeout=90, interval=0.2)
    wait_for(marker.exists, timeout=30)
    return run, int(marker.read_text())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def state_of(client: Any, run_id: Any) -> str:
    return str(client.read_flow_run(run_id).state.type.value)


def test_a_process_slot_run_cancelled_in_prefect_cancels_its_job(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
    tmp_path: Path,
) -> None:
    from prefect.states import Cancelling

    client, q = prefect_api, vqueue
    marker = tmp_path / "pid"
    job = q.push(f"{T}:stubborn", {"marker": str(marker), "seconds": 150}, retries=3)
    behind = q.push(f"{T}:add", {"x": 1, "y": 2})
    worker, thread = start_worker(q, url)
    try:
        run, pid = running_process(client, worker, job.id, marker)
        # The dispatcher knows the run while the job's process runs it.
        assert worker.active_children()[str(run.id)].id == job.id
        client.set_flow_run_state(run.id, Cancelling(message="from the UI"))
        wait_for(lambda: q.record(job.id)["status"] == "cancelled", timeout=30, interval=0.1)
        wait_for(lambda: gone(pid), timeout=15)  # SIGTERM (then SIGKILL) ended the process
        wait_for(lambda: state_of(client, run.id) == "CANCELLED", timeout=30, interval=0.2)
    finally:
        thread.join(150)
    assert not thread.is_alive()
    rec = q.record(job.id)
    assert rec["status"] == "cancelled" and rec["attempts"] == 1, rec  # never retried
    assert rec["flow_run_id"] == str(run.id)
    assert [r.id for r in runs_of(client, worker, job.id)] == [run.id]  # no second run
    assert q.record(behind.id)["result"] == 3  # the slot went on with a fresh process
    assert str(run.id) not in worker.active_children()


def test_fifoflow_cancel_of_a_process_slot_job_ends_its_run_cancelled(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
    tmp_path: Path,
) -> None:
    client, q = prefect_api, vqueue
    marker = tmp_path / "pid"
    job = q.push(f"{T}:stubborn", {"marker": str(marker), "seconds": 150}, retries=3)
    worker, thread = start_worker(q, url)
    try:
        run, pid = running_process(client, worker, job.id, marker)
        r = run_cli("cancel", job.id)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: q.record(job.id)["status"] == "cancelled", timeout=30, interval=0.1)
        wait_for(lambda: gone(pid), timeout=15)
    finally:
        thread.join(150)
    assert not thread.is_alive()
    rec = q.record(job.id)
    assert rec["status"] == "cancelled" and rec["attempts"] == 1, rec
    assert rec["flow_run_id"] == str(run.id)
    # The killed process could not end its run: the dispatcher did.
    final = client.read_flow_run(run.id).state
    assert final.type.value == "CANCELLED", final
    assert "cancelled" in (final.message or ""), final


def test_a_process_slot_killed_at_its_timeout_leaves_its_run_crashed(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
    tmp_path: Path,
) -> None:
    client, q = prefect_api, vqueue
    warm = q.push(f"{T}:add", {"x": 1})  # the slot's process starts (imports Prefect) first
    marker = tmp_path / "pid"
    job = q.push(f"{T}:stubborn", {"marker": str(marker), "seconds": 150}, retries=0, timeout=10)
    worker, thread = start_worker(q, url)
    thread.join(150)
    assert not thread.is_alive()
    assert q.record(warm.id)["result"] == 1
    rec = q.record(job.id)
    assert rec["status"] == "dead" and "TimeoutError" in rec["error"], rec
    final = client.read_flow_run(rec["flow_run_id"]).state
    assert final.type.value == "CRASHED", final
    assert "exceeded its timeout" in (final.message or ""), final
    assert gone(int(marker.read_text()))
    assert not worker.active_children()  # no run left behind as running
