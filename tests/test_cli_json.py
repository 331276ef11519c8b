"""Every command scriptable: ``--json`` gives one JSON document on stdout (run against a real
server), ``--version``; ``wait``'s summary, ``--fail-on-dead`` and its timeout document;
``jobs --newest`` and ``--run-order``; honest worker log lines and ``--log-format json``;
``workers`` counts from the server's records; the defaults from ``FIFOFLOW_RETRIES``,
``FIFOFLOW_TIMEOUT_SECONDS`` and ``FIFOFLOW_CONCURRENCY``; the resource options of ``push``
and ``worker`` in JSON; the library's ``NullHandler``."""

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
from fifoflow import Queue, __version__

pytestmark = pytest.mark.timeout(180)
T = "fftest_targets"


def doc(r: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    """The one JSON document a command printed (one line), after checking its exit code."""
    assert r.returncode == code, f"rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr!r}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def test_version() -> None:
    assert run_cli("--version").stdout == f"fifoflow {__version__}\n"
    assert doc(run_cli("--version", "--json")) == {"version": __version__}


def test_every_command_prints_one_json_document(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    q = vqueue.name
    (job_id,) = doc(run_cli("push", f"{T}:add", "--params", '{"x": 2}', "--json"))
    (dead_id,) = doc(run_cli("push", f"{T}:boom", "--retries", "0", "--json"))
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps({"jobs": [{"id": "a", "target": f"{T}:add", "params": {"x": 1}}]}))
    assert set(doc(run_cli("push-dag", str(dag), "--json"))) == {"a"}
    ran = doc(run_cli("worker", T, "--burst", "--json"))
    assert (ran["exit_code"], ran["jobs"], ran["attempts"]) == (0, 3, 3)
    assert doc(run_cli("status", "--json"))["queues"][q]["succeeded"] == 2
    assert [j["id"] for j in doc(run_cli("jobs", "--status", "dead", "--json"))] == [dead_id]
    assert doc(run_cli("job", job_id, "--json"))["result"] == 2
    assert doc(run_cli("wait", "-q", q, "--json"))["dead_now"] == 1
    assert [j["id"] for j in doc(run_cli("dlq", "list", "--json"))] == [dead_id]
    assert doc(run_cli("dlq", "requeue", "--all", "--json"))["requeued"] == [dead_id]
    assert doc(run_cli("worker", T, "--burst", "--json"))["jobs"] == 1
    assert doc(run_cli("dlq", "purge", "--json")) == {"queue": q, "purged": 1}
    assert [w for w in doc(run_cli("workers", "--json")) if q in w["queues"]] == []
    (later,) = doc(run_cli("push", f"{T}:add", "--params", '{"x": 1}', "--delay", "600", "--json"))
    assert doc(run_cli("cancel", later, "--json")) == {
        "id": later,
        "queue": q,
        "status": "cancelled",
    }
    added = doc(run_cli("schedule", "add", "s", f"{T}:add", "--every", "1h", "--json"))
    assert (added["name"], added["every"]) == ("s", 3600)
    assert [
        s["name"]
        for s in doc(run_cli("schedule", "list", "-q", vqueue.name, "--json"))["schedules"]
    ] == ["s"]
    assert doc(run_cli("schedule", "pause", "s", "--json"))["paused"] is True
    assert doc(run_cli("schedule", "resume", "s", "--json"))["paused"] is False
    assert doc(run_cli("schedule", "remove", "s", "--json")) == {"queue": q, "removed": "s"}
    filled = doc(
        run_cli(
            "backfill",
            f"{T}:echo",
            "--start",
            "2026-11-01",
            "--end",
            "2026-11-03",
            "--every",
            "1d",
            "--param",
            "day",
            "--json",
        )
    )
    assert (filled["pushed"], filled["skipped"]) == (3, 0)
    alert = doc(run_cli("monitor", "--once", "--json"), code=1)  # 3 queued, no worker
    assert alert["ok"] is False and alert["alerts"]
    vqueue.client.lpush("raw", json.dumps({"x": 5}), "not json")
    moved = doc(
        run_cli("bridge", "--from-list", "raw", "--target", f"{T}:add", "--burst", "--json")
    )
    assert (moved["moved"], moved["rejected"]) == (1, 1)
    dash = procs.start(sys.executable, "-m", "fifoflow", "dashboard", "--port", "0", "--json")
    assert dash.stdout is not None
    started = json.loads(dash.stdout.readline())
    assert started["url"].startswith("http://127.0.0.1:") and started["token"] is None


def test_the_embedded_server_commands_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    started = doc(run_cli("server", "start", "--json"))
    try:
        assert started["running"] and started["pid"] > 0
        assert doc(run_cli("server", "status", "--json"))["pid"] == started["pid"]
        assert doc(run_cli("server", "stop", "--json")) == {"stopped": True, "pid": started["pid"]}
        assert doc(run_cli("server", "status", "--json"), code=1) == {"running": False}
        assert doc(run_cli("server", "stop", "--json")) == {"stopped": False, "pid": None}
    finally:
        run_cli("server", "stop")


def _polling(client: Any, known: set[int]) -> bool:
    """A new client (not in ``known``) whose command count grows while we look twice: a
    ``wait`` in its polling loop, past its first snapshot."""

    def counts() -> dict[int, int]:
        return {
            int(c["id"]): int(c["tot-cmds"])
            for c in client.client_list()
            if int(c["id"]) not in known and not c.get("name")
        }

    first = counts()
    time.sleep(0.5)  # the loop polls every 0.2 s: two looks apart see it move
    second = counts()
    return any(second.get(i, n) >= n + 2 for i, n in first.items())


def test_wait_summary_fail_on_dead_and_timeout(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "go"
    held = vqueue.push(f"{T}:hold", {"marker": str(marker)})
    vqueue.push(f"{T}:boom", {}, retries=0)
    procs.worker(T, "-c", "1")
    wait_for(lambda: held.status == "running", timeout=30)
    known = {int(c["id"]) for c in vqueue.client.client_list()}
    waiting = procs.start(
        sys.executable, "-m", "fifoflow", "wait", "-q", vqueue.name, "--timeout", "120"
    )
    wait_for(lambda: _polling(vqueue.client, known), timeout=60)
    marker.write_text("go")  # now both jobs end while wait watches
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0
    assert re.fullmatch(
        r"all done after [\d.]+s: 1 succeeded, 1 dead, 0 cancelled meanwhile; "
        r"1 dead job\(s\) in the queue\(s\)\n",
        out,
    ), out
    r = run_cli("wait", "-q", vqueue.name, "--fail-on-dead", "--json")
    assert doc(r, code=1)["dead_now"] == 1
    assert r.stderr.startswith("error: 1 dead job(s) in ") and len(r.stderr.splitlines()) == 1
    vqueue.push(f"{T}:add", {"x": 1}, delay=600)
    r = run_cli("wait", "-q", vqueue.name, "--timeout", "0.3", "--json")
    timed = doc(r, code=1)
    assert timed["timed_out"] is True and timed["pending"] == 1
    assert r.stderr.startswith("error: timed out after 0.3s")


def test_jobs_newest_and_run_order(vqueue: Queue) -> None:
    low = vqueue.push(f"{T}:add", {"x": 1})
    high = vqueue.push(f"{T}:add", {"x": 2}, priority=5)
    last = vqueue.push(f"{T}:add", {"x": 3})
    ids = lambda *a: [j["id"] for j in doc(run_cli("jobs", "--json", *a))]  # noqa: E731
    assert ids() == [low.id, high.id, last.id]
    assert ids("--newest") == [last.id, high.id, low.id]
    assert ids("--run-order") == [high.id, low.id, last.id]
    assert ids("--limit", "2") == [low.id, high.id]
    table = run_cli("jobs", env={"COLUMNS": "160"}).stdout  # wide: no column dropped
    assert all(col in table for col in ("took", "worker")), table  # + "flow run" if any


def test_worker_log_lines_are_honest(vqueue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIFOFLOW_RETRY_BASE_SECONDS", "0.4")
    monkeypatch.setenv("FIFOFLOW_RETRY_MAX_SECONDS", "0.4")
    vqueue.push(f"{T}:boom", {}, retries=2)
    vqueue.push(f"{T}:add", {"x": 1})
    r = run_cli("worker", T, "--burst")
    assert r.returncode == 0, r.stderr
    retries = re.findall(r"failed after ([\d.]+)s; retry (\d)/2 in ([\d.]+)s", r.stderr)
    assert [n for _, n, _ in retries] == ["1", "2"], r.stderr
    for _, _, delay in retries:  # the retry's own delay: 0.4 s x a jitter in [0.5, 1]
        assert 0.2 <= float(delay) <= 0.4, r.stderr
    assert "dead (no retries left)" in r.stderr
    assert "stopped after 2 job(s) (4 attempt(s))" in r.stderr  # jobs, then attempts

    vqueue.push(f"{T}:add", {"x": 1})
    r = run_cli("worker", T, "--burst", "--log-format", "json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any("succeeded in" in line["message"] for line in lines)


def test_workers_counts_come_from_the_server(
    vqueue: Queue, procs: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long lease: the heartbeat's copy would be 20 s old; the counts are current."""
    monkeypatch.setenv("FIFOFLOW_LEASE_SECONDS", "60")
    procs.worker(T, "--name", "w-truth")

    def mine(done: int | None = None) -> list[dict[str, Any]]:
        found = [w for w in doc(run_cli("workers", "--json")) if w["name"] == "w-truth"]
        return [w for w in found if done is None or w["done"] == done]

    wait_for(mine, timeout=30)
    jobs = vqueue.push_many(f"{T}:add", [{"x": i} for i in range(3)])
    assert [j.result(timeout=30) for j in jobs] == [0, 1, 2]
    (w,) = wait_for(lambda: mine(done=3), timeout=10)  # well before the next heartbeat
    assert w["running"] == []


def test_resource_options_in_json(vqueue: Queue, procs: Processes) -> None:
    """push's and worker's resource options with --json; status explains the waiting head,
    workers shows the resources beside the server's counts."""
    (big,) = doc(run_cli("push", f"{T}:add", "--params", '{"x": 1}', "--cpus", "4", "--json"))
    pushed = run_cli(
        "push", f"{T}:add", "--params", '{"x": 2}', "--cpus", "1", "--mem", "1G",
        "--resource", "lic=1", "--expected", "5", "--json",
    )  # fmt: skip
    (small,) = doc(pushed)
    record = vqueue.record(small)
    assert record is not None and record["expected_seconds"] == 5
    assert (record["resources"]["cpu"], record["resources"]["lic"]) == (1, 1)
    procs.worker(T, "--name", "w-res", "--cpus", "2", "--mem", "2G", "--resource", "lic=1")
    (w,) = wait_for(
        lambda: [
            w for w in doc(run_cli("workers", "--json")) if w["name"] == "w-res" and w["done"]
        ],
        30,
    )
    assert w["done"] == 1 and "lic 0/1" in w["resources"]
    assert vqueue.record(small)["status"] == "succeeded"  # type: ignore[index]
    status = doc(run_cli("status", "--json"))
    assert status["queues"][vqueue.name]["queued"] == 1
    assert any(big in line and "cpu" in line for line in status["waiting"])


def test_defaults_from_the_environment(
    vqueue: Queue, procs: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIFOFLOW_RETRIES", "7")
    monkeypatch.setenv("FIFOFLOW_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("FIFOFLOW_CONCURRENCY", "3")
    (job_id,) = doc(run_cli("push", f"{T}:add", "--params", '{"x": 1}', "--json"))
    record = vqueue.record(job_id)
    assert record is not None and (record["retries"], record["timeout"]) == (7, 12.5)
    fresh = Queue(vqueue.name, url=os.environ["FIFOFLOW_URL"])  # settings read at creation
    assert fresh.push(f"{T}:add", {"x": 1}).to_dict()["retries"] == 7  # the API too
    fresh.close()
    procs.worker(T, "--name", "w-env")
    (w,) = wait_for(
        lambda: [w for w in doc(run_cli("workers", "--json")) if w["name"] == "w-env"], 30
    )
    assert w["concurrency"] == 3


def test_the_library_leaves_logging_to_the_application() -> None:
    code = (
        "import logging, fifoflow, fifoflow.worker, fifoflow.dashboard; "
        "root = logging.getLogger(); "
        "lib = logging.getLogger('fifoflow'); "
        "print(len(root.handlers), [type(h).__name__ for h in lib.handlers])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "0 ['NullHandler']", r.stdout + r.stderr


@pytest.mark.timeout(600)
def test_deploy_prints_one_json_document() -> None:
    """``fifoflow deploy --json`` against Prefect's own (ephemeral) API in PREFECT_HOME."""
    pytest.importorskip("prefect", reason="deploy needs Prefect")
    code = (
        "import anyio\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.actions import WorkPoolCreate\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        "        await c.create_work_pool(WorkPoolCreate(name='ffpool', type='process'))\n"
        "anyio.run(main)\n"
    )
    slow = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # loaded
    made = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=250, env=slow
    )
    assert made.returncode == 0, made.stderr[-2000:]
    r = run_cli(
        "deploy", T, "--name", "jsoncheck", "--pool", "ffpool", "--json", timeout=250, env=slow
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # one line on stdout (Prefect's own log, its server's shutdown noise included, is on
    # stderr)
    (line,) = r.stdout.splitlines()
    found = json.loads(line)
    assert found["deployment"] == "fifoflow-dispatcher/jsoncheck" and found["work_pool"] == "ffpool"
    assert len(found["id"]) == 36  # a UUID
