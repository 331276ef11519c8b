"""Prefect mode against a real Prefect API (the local ephemeral one) and a real Valkey.

Everything is checked by reading the Prefect API back, never by looking at console output:
every job is a child flow run whose parent task run lies in the dispatcher's flow run,
with its own log lines, its params as parameters, and the right final state.

Prefect is imported lazily (inside the ``prefect_api`` fixture), after PREFECT_HOME points
at a temporary folder: importing Prefect creates its home folder, and Prefect freezes its
settings at import. The tests of this module share one xdist group, so one process, one
PREFECT_HOME and one ephemeral API server serve them all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fifoflow import Queue
from fifoflow.settings import Settings

pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.timeout(240)]

PREFECT_ENV = {
    # The first start of the ephemeral API creates its database: slow on a busy machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


@pytest.fixture(scope="session")
def prefect_home() -> Iterator[Path]:
    """One PREFECT_HOME (so one database, one ephemeral API server) per test process."""
    home = Path(tempfile.mkdtemp(prefix="ffprefect-"))
    yield home
    if "prefect.server.api.server" in sys.modules:
        # Stop the ephemeral API server now, while pytest's output streams are open (its
        # own atexit stop would log onto closed streams).
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def prefect_api(prefect_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A sync Prefect client on the API the in-process workers use."""
    monkeypatch.setenv("PREFECT_HOME", str(prefect_home))
    for name, value in PREFECT_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    # Subprocess workers must find the same database as this process's settings.
    monkeypatch.setenv("PREFECT_HOME", str(get_current_settings().home))
    with get_client(sync_client=True) as client:
        yield client


def run_in_thread(worker: Any, timeout: float = 120) -> None:
    """``worker.run(burst=True)`` off the main thread (no signal handlers installed)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            assert worker.run(burst=True) == 0
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=target, name="prefect-worker")
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the Prefect worker did not finish"
    if errors:
        raise errors[0]


def make_worker(queue: Queue, url: str, concurrency: int, pools: list[str] | None = None) -> Any:
    from fifoflow.prefect import PrefectWorker

    return PrefectWorker(
        [queue.name],
        ["fftest_flows"],
        concurrency=concurrency,
        pools=pools,
        url=url,
        grace=5,
        settings=Settings(retry_base_seconds=0.05, retry_max_seconds=0.2),
    )


def logs_of(client: Any, flow_run_id: str) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    return list(
        client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            sort=LogSort.TIMESTAMP_ASC,
        )
    )


def children_of(client: Any, dispatcher_id: str) -> list[Any]:
    """Every flow run whose parent task run belongs to the dispatcher's flow run."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[dispatcher_id])
        ),
        limit=200,
    )
    return list(runs)


def test_each_job_is_a_child_flow_run_of_the_dispatcher(
    prefect_api: Any, vqueue: Queue, url: str, tmp_path: Path
) -> None:
    client = prefect_api
    q = vqueue
    jobs = {
        "hello1": q.push("fftest_flows:hello", {"n": 1}),
        "hello2": q.push("fftest_flows:hello", {"n": 2}),
        "plain": q.push("fftest_flows:plain", {"n": 3}),
        "fails": q.push("fftest_flows:fails", {"n": 4}, retries=1),
        "flaky": q.push("fftest_flows:flaky", {"marker": str(tmp_path / "flaky")}),
        "task": q.push("fftest_flows:with_task", {"x": 5, "key": q.name}),
        "triple": q.push("fftest_flows:triple", {"x": 7}),
        "async": q.push("fftest_flows:ahello", {"n": 8}),
        "badparams": q.push("fftest_flows:plain", {"zzz": 1}, retries=0),
        "timeout": q.push("fftest_flows:sleepy", {"n": 9, "seconds": 8}, timeout=1, retries=0),
    }
    worker = make_worker(q, url, concurrency=3)
    started = time.monotonic()
    run_in_thread(worker)
    elapsed = time.monotonic() - started

    records = {name: q.record(job.id) for name, job in jobs.items()}
    status = {name: r["status"] for name, r in records.items()}
    assert status == {
        "hello1": "succeeded",
        "hello2": "succeeded",
        "plain": "succeeded",
        "fails": "dead",
        "flaky": "succeeded",
        "task": "succeeded",
        "triple": "succeeded",
        "async": "succeeded",
        "badparams": "dead",
        "timeout": "dead",
    }, records
    assert records["hello1"]["result"] == {"n": 1, "job": jobs["hello1"].id, "attempt": 1}
    assert records["plain"]["result"] == 6
    assert records["task"]["result"] == 10
    assert records["triple"]["result"] == 21
    assert records["async"]["result"] == 108
    assert records["flaky"]["attempts"] == 2
    assert records["fails"]["attempts"] == 2
    assert "flow failed n=4" in records["fails"]["error"]
    assert records["badparams"]["flow_run_id"] is None  # refused before any run existed

    # Every request went through the worker's gate (its lock-file tokens exist), whose
    # limit stayed between 1 and the slots plus the dispatcher's own.
    gate = worker.gate
    assert gate is not None and sorted(gate.directory.glob("token-*"))
    assert 1 <= gate.limit <= 4

    # The dispatcher: one flow run, named after the queue and pools, Completed.
    dispatcher = client.read_flow_run(worker.flow_run_id)
    assert dispatcher.name == f"fifoflow-dispatcher/{q.name}[default]"
    assert dispatcher.state.is_completed()
    assert dispatcher.parameters["queues"] == [q.name]

    # Every child: a flow run whose parent task run is a task run of the dispatcher's run.
    children = children_of(client, worker.flow_run_id)
    by_id = {str(c.id): c for c in children}
    for child in children:
        parent_task = client.read_task_run(child.parent_task_run_id)
        assert str(parent_task.flow_run_id) == worker.flow_run_id
        # Prefect mirrors the child's final state onto its tracking task run (the abandoned
        # timed-out child may be crashed by the worker while its engine times it out).
        if not child.name.startswith(jobs["timeout"].id):
            assert parent_task.state.type == child.state.type, (child.name, parent_task.state)
    # 11 attempts ran as child runs: 8 jobs once, fails and flaky twice, timeout once.
    assert len(children) == 11, sorted(c.name for c in children)
    names = sorted(c.name for c in children)
    assert len(set(names)) == 11  # "<job id>-try<attempt>"
    for name, job in jobs.items():
        record = records[name]
        if name == "badparams":
            assert not any(n.startswith(job.id) for n in names)
            continue
        tries = [c for c in children if c.name.startswith(f"{job.id}-try")]
        assert len(tries) == (record["attempts"] if name != "timeout" else 1), name
        if record["flow_run_id"]:
            child = by_id[record["flow_run_id"]]  # the record keeps the last attempt's run
            assert child.name == f"{job.id}-try{record['attempts']}"
            # The job's params, plus the defaults Prefect binds.
            assert child.parameters.items() >= record["params"].items()

    def child(name: str) -> Any:
        return by_id[records[name]["flow_run_id"]]

    assert child("hello1").state.name == "Completed"
    assert child("fails").state.name == "Failed"
    assert all(c.state.name == "Failed" for c in children if c.name.startswith(jobs["fails"].id))
    first_flaky = next(c for c in children if c.name == f"{jobs['flaky'].id}-try1")
    assert first_flaky.state.name == "Failed" and child("flaky").state.name == "Completed"
    timed_out = next(c for c in children if c.name == f"{jobs['timeout'].id}-try1")
    assert timed_out.state.name in ("TimedOut", "Crashed"), timed_out.state
    # Flow names: a @flow keeps its own, a plain function / task is named after itself.
    flows = {name: client.read_flow(child(name).flow_id).name for name in ("hello1", "plain")}
    assert flows == {"hello1": "ff-hello", "plain": "plain"}
    assert client.read_flow(child("triple").flow_id).name == "triple"
    assert "fifoflow" in child("plain").tags

    # Logs and prints land on each child's own run, and nowhere else.
    all_child_logs: list[str] = []
    for name, expected in [
        ("hello1", ["hello log n=1", "hello print n=1"]),
        ("hello2", ["hello log n=2", "hello print n=2"]),
        ("plain", ["plain print n=3", "plain log n=3"]),
        ("fails", ["fails log n=4"]),
        ("async", ["async log n=8"]),
    ]:
        lines = logs_of(client, records[name]["flow_run_id"])
        messages = [log.message for log in lines]
        for text in expected:
            assert text in messages, (name, messages)
        assert all(log.task_run_id is None for log in lines if log.message in expected)
        all_child_logs += messages
    assert all_child_logs.count("hello print n=1") == 1
    dispatcher_logs = [log.message for log in logs_of(client, worker.flow_run_id)]
    assert not any("print n=" in m or "log n=" in m for m in dispatcher_logs)
    assert any(jobs["plain"].id in m and "Completed" in m for m in dispatcher_logs)

    # A task inside a child: its own retries ran, and it belongs to the child's run.
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    task_runs = client.read_task_runs(
        task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[child("task").id]))
    )
    shaky = [t for t in task_runs if t.name.startswith("shaky_double")]
    assert len(shaky) == 1 and shaky[0].state.is_completed() and shaky[0].run_count == 2
    triple_logs = [log.message for log in logs_of(client, records["triple"]["flow_run_id"])]
    assert "triple print x=7" in triple_logs

    # The summary artifact on the dispatcher's run: one row per job.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[dispatcher.id]))
    )
    tables = [a for a in artifacts if a.type == "table"]
    assert tables, artifacts
    rows = json.loads(tables[-1].data) if isinstance(tables[-1].data, str) else tables[-1].data
    assert {r["job"] for r in rows} == {j.id for j in jobs.values()}
    row = next(r for r in rows if r["job"] == jobs["fails"].id)
    assert row["state"] == "Failed" and row["attempts"] == 2 and row["duration_s"] >= 0
    assert tables[-1].key == f"fifoflow-{q.name.lower()}"
    # The markdown artifact made inside a child belongs to that child.
    child_artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[child("task").id]))
    )
    assert [a.key for a in child_artifacts] == ["ff-with-task"]
    print(f"\n10 jobs, 11 child flow runs at concurrency 3 in {elapsed:.1f}s")


def test_children_start_in_fifo_order(
    prefect_api: Any, vqueue: Queue, url: str, tmp_path: Path
) -> None:
    client = prefect_api
    q = vqueue
    jobs = q.push_many("fftest_flows:sleepy", [{"n": i} for i in range(6)], pool="gpu")
    x = int(time.time() * 1000)  # a cache key of this test run only
    cached = q.push_many("fftest_flows:cached", [{"x": x}, {"x": x}], pool="gpu")
    hooked = q.push("fftest_flows:hooked", {"marker": str(tmp_path / "hook")}, pool="gpu")
    worker = make_worker(q, url, concurrency=1, pools=["gpu"])
    run_in_thread(worker)

    # Prefect features inside children: task caching across children, state hooks.
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    def task_states(job_id: str) -> list[str]:
        run_id = q.record(job_id)["flow_run_id"]
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
        )
        return [t.state.name for t in runs]

    assert [q.record(j.id)["result"] for j in cached] == [x * x, x * x]
    assert task_states(cached[0].id) == ["Completed"]
    assert task_states(cached[1].id) == ["Cached"]
    assert (tmp_path / "hook").read_text() == f"{hooked.id}-try1 Completed"

    dispatcher = client.read_flow_run(worker.flow_run_id)
    assert dispatcher.name == f"fifoflow-dispatcher/{q.name}[gpu]"
    children = {str(c.id): c for c in children_of(client, worker.flow_run_id)}
    runs = [children[q.record(j.id)["flow_run_id"]] for j in jobs]
    assert [r.parameters for r in runs] == [{"n": i, "seconds": 0.0} for i in range(6)]
    starts = [r.start_time for r in runs]
    assert all(s is not None for s in starts)
    assert starts == sorted(starts) and len(set(starts)) == 6, starts
    for r in runs:
        assert r.state.is_completed()
        assert [f"sleepy start n={r.parameters['n']}"] == [
            log.message for log in logs_of(client, str(r.id)) if "sleepy start" in log.message
        ]


def _worker_command(queue: str) -> list[str]:
    """``fifoflow worker --prefect`` where the CLI has it; else the same in Python."""
    probe = subprocess.run(
        [sys.executable, "-m", "fifoflow", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode == 0 and "--prefect" in probe.stdout:
        return [sys.executable, "-m", "fifoflow", "worker", "fftest_flows", "--prefect",
                "--burst", "--queue", queue]  # fmt: skip
    code = (
        "import sys; from fifoflow.prefect import PrefectWorker; "
        f"sys.exit(PrefectWorker([{queue!r}], ['fftest_flows']).run(burst=True))"
    )
    return [sys.executable, "-c", code]


def release_after_one_success(q: Queue, url: str, release: Path) -> None:
    """Create ``release`` once a job of ``q`` has succeeded (at most 150 s from now)."""
    watch = Queue(q.name, url=url)
    try:
        deadline = time.monotonic() + 150
        while not release.exists() and time.monotonic() < deadline:
            if watch.stats()["succeeded"] >= 1:
                break
            time.sleep(0.05)
    finally:
        watch.close()
        release.write_text("go")


@pytest.mark.slow
def test_a_worker_process_with_its_own_ephemeral_api_on_the_same_database(
    prefect_api: Any, vqueue: Queue, url: str, tmp_path: Path
) -> None:
    """No PREFECT_API_URL anywhere: the worker process starts its own ephemeral API server on
    the SQLite database in PREFECT_HOME, which this process's ephemeral server also uses;
    a worker in this process works the same queue at the same time. Both record their runs
    in the one database."""
    client = prefect_api
    q = vqueue
    # The first job runs until this process's worker has finished one of the others: the
    # process (one slot) cannot work the queue off alone while the worker here starts up,
    # however long that takes on a busy machine.
    release = tmp_path / "release"
    jobs = [q.push("fftest_flows:sleepy_until", {"n": 0, "marker": str(release)})]
    jobs += q.push_many("fftest_flows:sleepy", [{"n": i, "seconds": 0.3} for i in range(1, 12)])
    proc = subprocess.Popen(
        _worker_command(q.name), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    releaser = threading.Thread(target=release_after_one_success, args=(q, url, release))
    try:
        # Start here once the process has claimed a job, so both really work side by side.
        deadline = time.monotonic() + 120
        while q.stats()["running"] == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker process never started a job"
            time.sleep(0.05)
        releaser.start()
        local = make_worker(q, url, concurrency=1)
        run_in_thread(local)
        _out, err = proc.communicate(timeout=120)
    finally:
        release.write_text("go")
        if releaser.is_alive():
            releaser.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    records = [q.record(j.id) for j in jobs]
    assert all(r["status"] == "succeeded" for r in records), records
    assert [r["result"] for r in records] == list(range(12))

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    dispatchers = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"fifoflow-dispatcher/{q.name}[default]"])
        )
    )
    assert len(dispatchers) == 2
    assert all(d.state.is_completed() for d in dispatchers)
    parents = []
    for r in records:
        run = client.read_flow_run(r["flow_run_id"])
        assert run.state.is_completed()
        parents.append(str(client.read_task_run(run.parent_task_run_id).flow_run_id))
        assert any("sleepy start" in log.message for log in logs_of(client, r["flow_run_id"]))
    assert set(parents) == {str(d.id) for d in dispatchers}  # both did some of the jobs
