"""Deployment mode, cancels both ways and ``fifoflow deploy``, against real Prefect processes.

One ``prefect server start`` on a free loopback port (PREFECT_HOME in a temporary folder)
serves the module; a ``process`` work pool with a real ``prefect worker start --pool`` runs
the deployment ``ffdep-work/d`` of a flow deployed from a local source folder
(``flow.from_source(...).deploy(...)``). fifoflow workers are real ``fifoflow worker``
processes. Everything is checked through the Prefect API and the job records. Every process
is stopped by pid at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, run_cli, wait_for
from fifoflow import Queue

pytestmark = [pytest.mark.xdist_group("prefect-server"), pytest.mark.timeout(300)]

FLOWS = '''
import time
from pathlib import Path

from prefect import flow


@flow(name="ffdep-work", persist_result=True)
def work(n: int, hold: str = "", fail_once: str = "") -> int:
    """n * 10; waits while the file ``hold`` is missing; fails once per ``fail_once``."""
    if fail_once and not Path(fail_once).exists():
        Path(fail_once).write_text("failed")
        raise RuntimeError(f"failing once n={n}")
    while hold and not Path(hold).exists():
        time.sleep(0.1)
    return n * 10


def held(marker: str, hold: str) -> str:
    """A plain target for a deployed dispatcher: runs until ``hold`` exists."""
    Path(marker).write_text("started")
    while not Path(hold).exists():
        time.sleep(0.05)
    return "done"
'''


@dataclass
class PrefectSetup:
    api: str  # PREFECT_API_URL
    env: dict[str, str]  # what every subprocess gets on top of the test's environment
    src: Path  # the deployed flow's source folder (also on the workers' PYTHONPATH)
    client: Any
    pool: str = "ffpool"
    deployment: str = "ffdep-work/d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def prefect_setup() -> Iterator[PrefectSetup]:
    home = Path(tempfile.mkdtemp(prefix="ffpsrv-"))
    src = home / "src"
    src.mkdir()
    (src / "ffdep_flows.py").write_text(textwrap.dedent(FLOWS))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    tests = str(Path(__file__).parent)
    overrides = {
        "PREFECT_HOME": str(home / "prefect"),
        # the pool worker's flow runs (a deployed dispatcher) keep their files here too
        "FIFOFLOW_HOME": str(home / "ff"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        "PYTHONPATH": os.pathsep.join([str(src), tests, os.environ.get("PYTHONPATH", "")]),
    }
    env = {**os.environ, **overrides}
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed at teardown
    procs: list[subprocess.Popen[Any]] = []
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    procs.append(server)
    try:
        wait_for(lambda: server.poll() is None and _healthy(api), timeout=180, interval=0.5)
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", "ffpool", "--type",
             "process"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", "ffidle", "--type",
             "process"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        deploy = textwrap.dedent(f"""
            from prefect import flow
            for pool, name in [("ffpool", "d"), ("ffidle", "idle")]:
                flow.from_source(source={str(src)!r}, entrypoint="ffdep_flows.py:work").deploy(
                    name=name, work_pool_name=pool, print_next_steps=False
                )
        """)
        subprocess.run(
            [sys.executable, "-c", deploy], env=env, check=True, capture_output=True, timeout=120
        )
        worker_log = open(home / "pool-worker.log", "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    "ffpool",
                    "--type",
                    "process",
                    "--limit",
                    "8",
                ],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(src),
            )
        )
        with (
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            yield PrefectSetup(api, overrides, src, client)
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
        if not os.environ.get("FFTEST_KEEP_PREFECT"):  # keep its logs to look into a failure
            shutil.rmtree(home, ignore_errors=True)


def runs_of(ps: PrefectSetup, job_id: str) -> list[Any]:
    """The flow runs tagged with a job's id, oldest first (counted through the API)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    return list(
        ps.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"fifoflow-job:{job_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )
    )


def runs_named(ps: PrefectSetup, name: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    return list(
        ps.client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    )


def log_lines(ps: PrefectSetup, run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = ps.client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def state_of(ps: PrefectSetup, run_id: Any) -> str:
    return str(ps.client.read_flow_run(run_id).state.type.value)


def ff_worker(
    procs: Processes, ps: PrefectSetup, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return procs.worker(*args, env={**ps.env, **(env or {})}, cwd=str(ps.src))


def finished(proc: subprocess.Popen[str], timeout: float) -> None:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("the fifoflow worker did not finish") from None
    assert proc.returncode == 0, err[-4000:]


def test_jobs_become_deployment_runs_in_fifo_order_and_a_failed_run_is_retried(
    prefect_setup: PrefectSetup, vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    ps = prefect_setup
    jobs = [vqueue.push("ffdep_flows:work", {"n": n}) for n in range(4)]
    flaky = vqueue.push("ffdep_flows:work", {"n": 4, "fail_once": str(tmp_path / "f")}, retries=1)
    w = ff_worker(procs, ps, "ffdep_flows", "--prefect", "--deployment", ps.deployment,
                  "--burst", "-c", "1")  # fmt: skip
    finished(w, 240)
    records = [vqueue.record(j.id) for j in [*jobs, flaky]]
    assert [r["status"] for r in records] == ["succeeded"] * 5, records
    assert [r["result"] for r in records] == [0, 10, 20, 30, 40]  # the persisted results
    assert records[4]["attempts"] == 2
    # N jobs -> N flow runs of the deployment (the flaky one: one run per attempt).
    runs = {j.id: runs_of(ps, j.id) for j in [*jobs, flaky]}
    assert [len(runs[j.id]) for j in jobs] == [1, 1, 1, 1]
    assert [r.state.name for r in runs[flaky.id]] == ["Failed", "Completed"]
    assert [r.name for r in runs[flaky.id]] == [f"{flaky.id}-try1", f"{flaky.id}-try2"]
    deployment = ps.client.read_deployment_by_name(ps.deployment)
    first = [runs[j.id][0] for j in [*jobs, flaky]]
    assert all(r.deployment_id == deployment.id for r in first)
    assert all(r.work_pool_name == ps.pool for r in first)
    assert [r.parameters["n"] for r in first] == [0, 1, 2, 3, 4]
    assert str(first[0].id) == records[0]["flow_run_id"]
    starts = [r.start_time for r in first]
    assert all(s is not None for s in starts) and starts == sorted(starts), starts  # FIFO
    # Each run is a child of the one dispatcher run (through a tracking task run).
    parents = {str(ps.client.read_task_run(r.parent_task_run_id).flow_run_id) for r in first}
    assert len(parents) == 1
    dispatcher = ps.client.read_flow_run(parents.pop())
    assert dispatcher.name == f"fifoflow-dispatcher/{vqueue.name}[default]"
    print(f"\n5 jobs -> {sum(len(v) for v in runs.values())} deployment runs (one retry), "
          "FIFO start order")  # fmt: skip


def test_a_killed_workers_run_is_adopted_not_started_twice(
    prefect_setup: PrefectSetup, vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    ps = prefect_setup
    hold = tmp_path / "hold"
    long = vqueue.push("ffdep_flows:work", {"n": 1, "hold": str(hold)})
    short = vqueue.push("ffdep_flows:work", {"n": 2})
    args = ("ffdep_flows", "--prefect", "--deployment", ps.deployment, "-c", "1")
    first = ff_worker(procs, ps, *args)

    def running() -> bool:
        runs = runs_of(ps, long.id)
        return bool(runs) and runs[0].state.type.value == "RUNNING"

    wait_for(running, timeout=120, interval=0.5)
    os.killpg(first.pid, signal.SIGKILL)  # no goodbye: the job is redelivered
    first.wait(10)
    second = ff_worker(procs, ps, *args, "--burst")
    wait_for(lambda: (vqueue.record(long.id) or {}).get("attempts") == 2, timeout=120)
    hold.write_text("go")
    finished(second, 180)
    rec = vqueue.record(long.id)
    assert rec["status"] == "succeeded" and rec["result"] == 10, rec
    assert rec["attempts"] == 2 and rec["lost"] == 1
    runs = runs_of(ps, long.id)
    assert len(runs) == 1, [r.name for r in runs]  # adopted: 0 duplicate runs
    assert runs[0].name == f"{long.id}-try1" and str(runs[0].id) == rec["flow_run_id"]
    assert runs[0].state.is_completed()
    assert len(runs_of(ps, short.id)) == 1 and vqueue.record(short.id)["result"] == 20
    print("\nafter a SIGKILL: 2 jobs, 2 flow runs, 0 duplicates (counted via the API)")


def test_a_run_that_no_pool_worker_starts_hits_the_start_timeout(
    prefect_setup: PrefectSetup, vqueue: Queue, procs: Processes
) -> None:
    ps = prefect_setup
    job = vqueue.push("ffdep_flows:work", {"n": 1}, retries=1)
    w = ff_worker(procs, ps, "ffdep_flows", "--prefect", "--deployment", "ffdep-work/idle",
                  "--start-timeout", "2", "--burst")  # fmt: skip
    finished(w, 120)
    rec = vqueue.record(job.id)
    assert rec["status"] == "dead" and rec["attempts"] == 2, rec
    assert "was not started within 2s" in rec["error"] and "work pool" in rec["error"]
    runs = runs_of(ps, job.id)
    assert [r.state.name for r in runs] == ["Cancelled", "Cancelled"]  # never started later
    # Bad input: one line, exit 2.
    r = run_cli("worker", "ffdep_flows", "--prefect", "--deployment", "ffdep-work/nope",
                "--burst", env=ps.env)  # fmt: skip
    assert r.returncode == 2 and "no Prefect deployment 'ffdep-work/nope'" in r.stderr, r.stderr
    r = run_cli("deploy", "ffdep_flows", "--name", "x", "--pool", "nopool", env=ps.env)
    assert r.returncode == 2 and "no Prefect work pool 'nopool'" in r.stderr, r.stderr


def test_deployment_options_bad_input() -> None:
    for args, says in [
        (["--deployment", "f/d"], "need --prefect"),
        (["--prefect", "--deployment", "no-slash"], "FLOW/DEPLOYMENT"),
        (["--prefect", "--deployment", "f/d", "--start-timeout", "0"], "--start-timeout"),
    ]:
        r = run_cli("worker", "fftest_targets", *args, "--burst")
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cancels_both_ways_in_deployment_mode(
    prefect_setup: PrefectSetup, vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    from prefect.states import Cancelling

    ps = prefect_setup
    hold = str(tmp_path / "never")
    by_prefect = vqueue.push("ffdep_flows:work", {"n": 1, "hold": hold}, retries=3)
    by_fifoflow = vqueue.push("ffdep_flows:work", {"n": 2, "hold": hold}, retries=3)
    w = ff_worker(procs, ps, "ffdep_flows", "--prefect", "--deployment", ps.deployment,
                  "-c", "2", "--burst")  # fmt: skip

    def both_running() -> bool:
        runs = [runs_of(ps, j.id) for j in (by_prefect, by_fifoflow)]
        return all(r and r[0].state.type.value == "RUNNING" for r in runs)

    wait_for(both_running, timeout=120, interval=0.5)
    [prefect_run] = runs_of(ps, by_prefect.id)
    ps.client.set_flow_run_state(prefect_run.id, Cancelling(message="from the UI"))
    r = run_cli("cancel", by_fifoflow.id, env=ps.env)
    assert r.returncode == 0, r.stderr
    finished(w, 120)
    for job in (by_prefect, by_fifoflow):
        rec = vqueue.record(job.id)
        assert rec["status"] == "cancelled" and rec["attempts"] == 1, rec  # never retried
        [run] = runs_of(ps, job.id)
        assert run.state.name == "Cancelled", run.state  # Prefect's worker stopped it


def test_cancels_both_ways_in_local_mode(
    prefect_setup: PrefectSetup, vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    from prefect.states import Cancelling

    ps = prefect_setup
    a, b = tmp_path / "a", tmp_path / "b"
    by_prefect = vqueue.push("fftest_targets:cooperative", {"marker": str(a)}, retries=3)
    by_fifoflow = vqueue.push("fftest_targets:cooperative", {"marker": str(b)}, retries=3)
    w = ff_worker(procs, ps, "fftest_targets", "--prefect", "-c", "2", "--burst")
    wait_for(lambda: a.exists() and b.exists(), timeout=120, interval=0.2)
    [run_a] = wait_for(lambda: runs_named(ps, f"{by_prefect.id}-try1"), timeout=30)
    ps.client.set_flow_run_state(run_a.id, Cancelling(message="from the UI"))
    r = run_cli("cancel", by_fifoflow.id, env=ps.env)
    assert r.returncode == 0, r.stderr
    finished(w, 120)
    for job in (by_prefect, by_fifoflow):
        rec = vqueue.record(job.id)
        assert rec["status"] == "cancelled" and rec["attempts"] == 1, rec  # never retried
        assert state_of(ps, rec["flow_run_id"]) == "CANCELLED"


def test_fifoflow_deploy_runs_the_dispatcher_and_a_cancel_drains_it(
    prefect_setup: PrefectSetup, vqueue: Queue, url: str, tmp_path: Path
) -> None:
    from prefect.states import Cancelling

    ps = prefect_setup
    marker, hold = tmp_path / "started", tmp_path / "hold"
    running = vqueue.push("ffdep_flows:held", {"marker": str(marker), "hold": str(hold)})
    behind = vqueue.push("ffdep_flows:held", {"marker": str(marker), "hold": str(hold)})
    name = f"disp-{vqueue.name}"
    r = subprocess.run(
        [sys.executable, "-m", "fifoflow", "deploy", "ffdep_flows", "--name", name,
         "--pool", ps.pool, "--queue", vqueue.name, "-c", "1", "--grace", "20",
         "--url", url],
        env={**os.environ, **ps.env}, cwd=str(ps.src), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"fifoflow-dispatcher/{name}" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", f"fifoflow-dispatcher/{name}"],
        env={**os.environ, **ps.env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    wait_for(marker.exists, timeout=150, interval=0.2)  # the deployed dispatcher runs a job
    [child] = wait_for(lambda: runs_named(ps, f"{running.id}-try1"), timeout=30)
    dispatcher = ps.client.read_flow_run(
        ps.client.read_task_run(child.parent_task_run_id).flow_run_id
    )
    assert (
        dispatcher.deployment_id
        == ps.client.read_deployment_by_name(f"fifoflow-dispatcher/{name}").id
    )
    # A cancel from the UI: the dispatcher stops claiming (it says so on its run) and its
    # running job finishes; the job behind it is never claimed.
    ps.client.set_flow_run_state(dispatcher.id, Cancelling(message="from the UI"))

    def draining() -> bool:
        return any("stopping; no new claims" in m for m in log_lines(ps, dispatcher.id))

    wait_for(draining, timeout=60, interval=0.5)
    assert not ps.client.read_flow_run(dispatcher.id).state.is_final()  # still draining
    hold.write_text("go")
    wait_for(lambda: ps.client.read_flow_run(dispatcher.id).state.is_final(), timeout=120,
             interval=0.5)  # fmt: skip
    assert vqueue.record(running.id)["status"] == "succeeded"
    assert vqueue.record(behind.id)["status"] == "queued"  # never claimed after the cancel
    print(f"\ndeployed dispatcher drained; its run ended "
          f"{ps.client.read_flow_run(dispatcher.id).state.name}")  # fmt: skip
