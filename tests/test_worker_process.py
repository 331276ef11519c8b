"""The worker as users run it: real `fifoflow worker` processes against the embedded Valkey."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import EmbeddedServer, Processes, blocked_ids, run_cli, wait_blocked, wait_for
from fifoflow import Queue


@pytest.fixture(params=["valkey", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """Worker processes against the embedded Valkey and against the 6-node cluster."""
    return str(request.getfixturevalue(request.param).url)


FAST = {"FIFOFLOW_RETRY_BASE_SECONDS": "0.05"}


def starts(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def push_records(
    q: Queue, log: Path, n: int, seconds: float = 0.0, marker: str | None = None, **kw: Any
) -> list[str]:
    """``fftest_targets:record`` jobs 0..n-1: each logs its start, sleeps ``seconds`` and,
    with ``marker``, runs on until that file exists."""
    held = {} if marker is None else {"marker": marker}
    jobs = q.push_many(
        "fftest_targets:record",
        [{"log": str(log), "n": i, "seconds": seconds, **held} for i in range(n)],
        **kw,
    )
    return [j.id for j in jobs]


def all_finished(q: Queue) -> bool:
    s = q.stats()
    return s["queued"] + s["delayed"] + s["running"] == 0


def test_sigkill_of_a_busy_worker_loses_nothing(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "starts.log"
    ids = push_records(vqueue, log, 24, seconds=0.4)
    a = procs.worker("fftest_targets", "-c", "4", "--lease", "2", env=FAST)
    wait_for(lambda: len(starts(log)) >= 6, timeout=30)
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.time()
    a.wait(10)
    in_flight = {r["n"] for r in starts(log) if r["pid"] == a.pid} - {
        j["params"]["n"] for j in vqueue.jobs("succeeded")
    }
    b = procs.worker("fftest_targets", "-c", "4", "--lease", "2", env=FAST)
    # The new worker is up once it has registered; how long its start-up takes on a busy
    # machine is no business of this test's.
    wait_for(lambda: any(w["pid"] == b.pid for w in vqueue.broker.live_workers()), timeout=30)
    up_at = time.time()
    wait_for(lambda: all_finished(vqueue), timeout=60)

    records = vqueue.jobs()
    assert [r["id"] for r in records] == ids
    assert all(r["status"] == "succeeded" for r in records)
    assert [r["result"] for r in records] == list(range(24))
    runs: dict[int, list[dict[str, Any]]] = {}
    for r in starts(log):
        runs.setdefault(r["n"], []).append(r)
    assert set(runs) == set(range(24))
    twice = {n for n, rs in runs.items() if len(rs) > 1}
    # Only the jobs in flight at the kill ran twice, at most one per slot.
    assert twice <= in_flight
    assert len(in_flight) <= 4
    # Each came back within its lease (2 s) of the kill, or at once if the new worker was
    # not up by then (a few seconds of slack for a loaded machine).
    due = max(killed_at + 2, up_at)
    late = {n: round(runs[n][1]["t"] - due, 3) for n in twice}
    print(f"\nkill -> new worker up {up_at - killed_at:.2f}s; reruns after their due time: {late}")
    assert all(s < 4 for s in late.values()), late


def test_sigterm_drains_running_jobs_and_leaves_the_rest_in_order(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log, release, err = tmp_path / "starts.log", tmp_path / "release", tmp_path / "worker.err"
    # The running jobs last until the worker has taken the signal in (they are released
    # then), not a guessed second that a busy machine could spend before it does.
    ids = push_records(vqueue, log, 8, marker=str(release))
    with open(err, "w") as fh:
        w = procs.worker("fftest_targets", "-c", "2", "--grace", "20", stderr=fh)
    wait_for(lambda: len(starts(log)) >= 2, timeout=30)
    os.kill(w.pid, signal.SIGTERM)
    signalled = time.time()
    wait_for(lambda: " stopping (grace " in err.read_text(), timeout=30)
    release.write_text("go")
    assert w.wait(30) == 0
    started = starts(log)
    assert len(started) == 2 and all(r["t"] < signalled for r in started)
    done = vqueue.jobs("succeeded")
    assert sorted(j["params"]["n"] for j in done) == [0, 1]
    queued = vqueue.jobs("queued")
    assert [j["id"] for j in queued] == ids[2:]
    assert all(j["attempts"] == 0 for j in queued)


@pytest.mark.parametrize(("workers", "slots"), [(1, 1), (2, 3)])
def test_start_order_follows_the_queue(
    vqueue: Queue, procs: Processes, tmp_path: Path, workers: int, slots: int
) -> None:
    log = tmp_path / "starts.log"
    n = 60
    push_records(vqueue, log, n, seconds=0.01)
    for _ in range(workers):
        procs.worker("fftest_targets", "-c", str(slots), "--burst", "--log-level", "WARNING")
    wait_for(lambda: all_finished(vqueue), timeout=60)
    order = [r["n"] for r in sorted(starts(log), key=lambda r: r["t"])]
    assert sorted(order) == list(range(n))
    if workers * slots == 1:
        assert order == list(range(n))
    else:
        assert max(abs(rank - n_) for rank, n_ in enumerate(order)) <= workers * slots


def test_priorities_and_pools_through_the_cli(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "starts.log"

    def push(n: int, *extra: str) -> None:
        params = json.dumps({"log": str(log), "n": n})
        r = run_cli("push", "fftest_targets:record", "--params", params, *extra)
        assert r.returncode == 0, r.stderr

    push(0)
    push(1, "--priority", "5")
    push(2, "--priority", "-1")
    push(3, "--priority", "5")
    push(10, "--pool", "gpu")
    w = procs.worker("fftest_targets", "--burst")
    assert w.wait(60) == 0
    assert [r["n"] for r in starts(log)] == [1, 3, 0, 2]
    assert vqueue.stats()["queued"] == 1  # the gpu job waits for a gpu worker

    w = procs.worker("fftest_targets", "--burst", "--pool", "gpu")
    assert w.wait(60) == 0
    assert [r["n"] for r in starts(log)][-1] == 10
    assert vqueue.stats()["succeeded"] == 5


def test_poison_job_goes_dead_and_the_worker_goes_on(vqueue: Queue, procs: Processes) -> None:
    poison = vqueue.push("fftest_targets:boom", {"message": "bad batch"}, retries=2)
    good = vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(10)])
    hostile = vqueue.push("os:system", {"command": "touch /tmp/fifoflow-hacked"})
    w = procs.worker("fftest_targets", "-c", "2", "--burst", env=FAST)
    assert w.wait(60) == 0
    assert [j.result(timeout=1) for j in good] == list(range(10))
    rec = vqueue.record(poison.id)
    assert rec is not None
    assert (rec["status"], rec["attempts"], rec["error"]) == ("dead", 3, "ValueError: bad batch")
    assert "Traceback" in (vqueue.traceback(poison.id) or "")
    bad = vqueue.record(hostile.id)
    assert bad is not None and bad["status"] == "dead" and "not imported" in bad["error"]


def test_job_over_its_timeout_fails_and_the_slot_is_replaced(
    vqueue: Queue, procs: Processes
) -> None:
    slow = vqueue.push("fftest_targets:sleep", {"seconds": 30}, timeout=0.5, retries=0)
    quick = vqueue.push("fftest_targets:add", {"x": 1})
    w = procs.worker("fftest_targets", "-c", "1", "--burst")
    # However long the worker takes to start: the one slot is free again as soon as the
    # slow job times out, not when its 30 s sleep ends.
    assert quick.result(timeout=25) == 1
    assert w.wait(30) == 0
    rec = vqueue.record(slow.id)
    assert rec is not None and rec["status"] == "dead"
    assert rec["error"] == "TimeoutError: job exceeded its timeout of 0.5s"
    after = vqueue.record(quick.id)["started_at"] - rec["finished_at"]  # type: ignore[index]
    print(f"\nslow job timed out -> quick job started {after:.3f}s later")
    assert after < 5


def test_idle_worker_starts_a_pushed_job_at_once(vqueue: Queue, procs: Processes) -> None:
    before = blocked_ids(vqueue.client)
    w = procs.worker("fftest_targets", "-c", "1")
    wait_for(lambda: json.loads(run_cli("workers", "--json").stdout), timeout=30)
    wait_blocked(vqueue.client, before, w)  # it blocks on the wake list: idle
    for _ in range(5):
        job = vqueue.push("fftest_targets:add", {"x": 2})
        assert job.result(timeout=5) == 2
        rec = vqueue.record(job.id)
        assert rec is not None
        # No poll interval: well under the 5 s safety timeout of the blocking wait.
        assert rec["started_at"] - rec["created_at"] < 0.5


def test_a_retry_starts_when_due_on_an_idle_worker(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    """The report that schedules a retry also claims the slot's next job: finding nothing
    ready, that claim used to drop the wake token the retry had left, so the idle worker
    slept out its whole wait (up to 5 s) before it saw the retry was due."""
    env = {"FIFOFLOW_RETRY_BASE_SECONDS": "1.0"}  # back-off 0.5-1 s (jitter)
    before = blocked_ids(vqueue.client)
    w = procs.worker("fftest_targets", "-c", "3", env=env)
    wait_blocked(vqueue.client, before, w)
    # One slot held busy, so the dispatcher waits on the server (for its idle slots), not
    # on its slots, when the flaky job fails in another.
    release = tmp_path / "release"
    vqueue.push("fftest_targets:hold", {"marker": str(release)})
    job = vqueue.push("fftest_targets:flaky", {"marker": str(tmp_path / "flaky")}, retries=1)
    try:
        assert job.result(timeout=30) == "ok"
    finally:
        release.write_text("go")
    rec = vqueue.record(job.id)
    assert rec is not None and rec["attempts"] == 2
    events = {e["outcome"]: e for e in vqueue.broker.timeline(vqueue.name, 10)}
    failed_at = events["retry"]["finished"]
    late = rec["started_at"] - failed_at
    print(f"\nretry started {late:.2f}s after the failure (back-off 0.5-1 s)")
    assert late < 2.5, f"the retry started {late:.2f}s after the failure"


def test_status_jobs_and_workers_commands_show_a_live_worker(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    # The first two jobs run until the test releases them, so the CLI calls below see them
    # running however long each call takes to start on a busy machine.
    release = tmp_path / "release"
    held = {"marker": str(release)}
    vqueue.push_many("fftest_targets:hold", [held, held])
    vqueue.push("fftest_targets:sleep", {"seconds": 0.1})
    procs.worker("fftest_targets", "-c", "2", "--name", "w-test", "--lease", "3")
    wait_for(lambda: vqueue.stats()["running"] == 2, timeout=30)

    # Other tests' killed workers may still be listed until their registration expires;
    # the running jobs show from the first heartbeat on.
    def me() -> list[dict[str, Any]]:
        found = json.loads(run_cli("workers", "--json").stdout)
        return [w for w in found if w["name"] == "w-test" and len(w["running"]) == 2]

    ws = wait_for(me, timeout=20)
    assert ws[0]["concurrency"] == 2
    assert ws[0]["queues"] == [vqueue.name] and ws[0]["pools"] == ["default"]
    status = json.loads(run_cli("status", "--queue", vqueue.name, "--json").stdout)
    assert status["queues"][vqueue.name]["running"] == 2
    assert status["queues"][vqueue.name]["queued"] == 1
    assert status["workers"] >= 1
    listed = json.loads(run_cli("jobs", "--status", "running", "--json").stdout)
    assert len(listed) == 2 and all(j["worker"] == "w-test" for j in listed)
    assert vqueue.stats()["running"] == 2  # still held: every figure above saw the same state
    release.write_text("go")
    r = run_cli("wait", "--queue", vqueue.name, "--timeout", "30")
    assert r.returncode == 0, r.stderr
    assert vqueue.stats()["succeeded"] == 3


def test_wait_times_out_with_exit_1(vqueue: Queue) -> None:
    vqueue.push("fftest_targets:add", {"x": 1})
    r = run_cli("wait", "--queue", vqueue.name, "--timeout", "0.5")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: timed out")


@pytest.mark.timeout(90)
def test_worker_survives_a_server_restart(procs: Processes, tmp_path: Path) -> None:
    srv = EmbeddedServer()
    try:
        q = Queue("restart", url=srv.url)
        env = {"FIFOFLOW_URL": srv.url, "FIFOFLOW_QUEUE": "restart"}
        first = q.push_many("fftest_targets:add", [{"x": i} for i in range(5)])
        w = procs.worker("fftest_targets", "-c", "2", env=env)
        assert [j.result(timeout=20) for j in first] == list(range(5))
        srv.restart()
        q = Queue("restart", url=srv.url)
        second = q.push_many("fftest_targets:add", [{"x": i} for i in range(5, 10)])
        assert [j.result(timeout=30) for j in second] == list(range(5, 10))
        assert w.poll() is None
        assert q.stats()["succeeded"] == 10  # the first five survived the restart too
        os.kill(w.pid, signal.SIGTERM)
        assert w.wait(20) == 0
    finally:
        srv.close()


def test_process_slots_kill_an_overrunning_job(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    slow = vqueue.push(
        "fftest_targets:sleep_then_touch",
        {"seconds": 3, "path": str(marker)},
        timeout=0.5,
        retries=0,
    )
    quick = vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    w = procs.worker("fftest_targets", "-c", "1", "--processes", "--burst")
    assert [j.result(timeout=20) for j in quick] == [0, 1, 2]
    assert w.wait(30) == 0
    rec = vqueue.record(slow.id)
    assert rec is not None and rec["status"] == "dead"
    assert rec["error"] == "TimeoutError: job exceeded its timeout of 0.5s"
    time.sleep(3)
    assert not marker.exists()  # the job's process was killed, not left running
