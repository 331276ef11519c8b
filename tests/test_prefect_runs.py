"""Prefect mode's run names, tags, job events and process slots, against a real Prefect API
(the local ephemeral one, a temporary PREFECT_HOME) and a real Valkey, read back through
the Prefect client.

* ``--run-name`` names each child run from its job's params; a job whose params lack a
  named param is dead at once with a clear reason; per-job ``tags`` are on its runs;
* each attempt's run carries the job's lifecycle as ``fifoflow.job.*`` events;
* ``processes=True`` (``--prefect --processes``) runs each attempt's child flow run in the
  slot's own process, still a child of the dispatcher's run, in FIFO order, with retries.
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
    logs_of,
    prefect_api,
    prefect_home,
    run_in_thread,
)

pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.timeout(300)]


def make_worker(q: Queue, url: str, concurrency: int = 1, **options: Any) -> Any:
    from fifoflow.prefect import PrefectWorker

    return PrefectWorker(
        [q.name],
        ["fftest_flows"],
        concurrency=concurrency,
        url=url,
        grace=5,
        settings=Settings(retry_base_seconds=0.05, retry_max_seconds=0.2),
        **options,
    )


def job_events(client: Any, run_id: str) -> list[str]:
    """The names of the ``fifoflow.job.*`` events stored on a flow run, oldest first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(
        event=EventNameFilter(prefix=["fifoflow.job."]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    found = client.read_events(filter=flt, limit=50).events
    return [e.event for e in sorted(found, key=lambda e: (e.occurred, e.received))]


def runs_named(client: Any, dispatcher_id: str, prefix: str) -> list[Any]:
    """The dispatcher's child runs named ``PREFIX...``, oldest first (a job's runs are
    named ``JOB-tryN`` unless ``--run-name`` says otherwise)."""
    runs = [c for c in children_of(client, dispatcher_id) if c.name.startswith(prefix)]
    return sorted(runs, key=lambda r: r.created)


def test_run_names_from_params_and_tags_on_the_child_runs(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
) -> None:
    client, q = prefect_api, vqueue
    a = q.push("fftest_flows:where", {"n": 1, "lr": 0.001}, tags=["exp-a", "gpu"])
    b = q.push("fftest_flows:where", {"n": 2}, tags=["exp-b"])  # lr: the default
    c = q.push("fftest_flows:plain", {"n": 3})  # no lr at all: cannot be named
    worker = make_worker(q, url, 2, run_name="n={n}-lr={lr:g}")
    run_in_thread(worker)

    ra, rb, rc = (q.record(j.id) for j in (a, b, c))
    assert (ra["status"], rb["status"]) == ("succeeded", "succeeded")
    assert ra["tags"] == ["exp-a", "gpu"] and ra["result"]["tags"] == ["exp-a", "gpu"]
    run_a, run_b = client.read_flow_run(ra["flow_run_id"]), client.read_flow_run(rb["flow_run_id"])
    assert run_a.name == "n=1-lr=0.001" and run_b.name == "n=2-lr=0.1"
    assert {"exp-a", "gpu", "fifoflow", f"fifoflow-queue:{q.name}"} <= set(run_a.tags)
    assert "exp-b" in run_b.tags and "exp-a" not in run_b.tags
    # The tracking task run in the dispatcher carries the tags too.
    assert "exp-a" in client.read_task_run(run_a.parent_task_run_id).tags

    # A job whose params lack a named param: dead at once, the reason in one line, no run.
    assert rc["status"] == "dead" and rc["attempts"] == 1 and rc["flow_run_id"] is None
    assert rc["error"] == (
        "RunNameError: --run-name 'n={n}-lr={lr:g}' names lr, which job "
        f"{c.id} does not have (its params: n, seconds)"
    )
    assert len(children_of(client, worker.flow_run_id)) == 2


def test_run_name_and_tag_options_on_the_cli(vqueue: Queue) -> None:
    r = run_cli("worker", "fftest_flows", "--prefect", "--run-name", "x={0}", "--burst")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: invalid --run-name template 'x={0}': {0} is not a param name "
        "(use {param} or {param:format})"
    ]
    r = run_cli("worker", "fftest_flows", "--run-name", "x={n}", "--burst")
    assert (r.returncode, r.stderr.strip()) == (
        2,
        "error: --run-name names Prefect flow runs: it needs --prefect",
    )
    r = run_cli("worker", "fftest_flows", "--prefect", "--run-name", "x={n", "--burst")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "invalid --run-name template 'x={n'" in r.stderr

    r = run_cli("push", "fftest_flows:where", "-p", '{"n": 1}', "--tag", "a", "--tag", "b c")
    assert r.returncode == 0, r.stderr
    assert vqueue.record(r.stdout.strip())["tags"] == ["a", "b c"]
    r = run_cli("push", "fftest_flows:where", "-p", '{"n": 1}', "--tag", "")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: invalid tag ''"), r.stderr


def test_each_attempt_carries_the_job_lifecycle_as_prefect_events(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
    tmp_path: Path,
) -> None:
    client, q = prefect_api, vqueue
    ok = q.push("fftest_flows:plain", {"n": 1})
    flaky = q.push("fftest_flows:flaky_plain", {"marker": str(tmp_path / "flaky")}, retries=2)
    dead = q.push("fftest_flows:fails", {"n": 2}, retries=0)
    stop = q.push("fftest_flows:until_cancelled", {})
    worker = make_worker(q, url, 3)
    runner = threading.Thread(target=run_in_thread, args=(worker,))
    runner.start()
    try:
        wait_for(lambda: q.record(stop.id)["status"] == "running", timeout=120)
        q.cancel(stop.id)
    finally:
        runner.join(180)
    assert not runner.is_alive()
    status = {j.id: q.record(j.id)["status"] for j in (ok, flaky, dead, stop)}
    assert list(status.values()) == ["succeeded", "succeeded", "dead", "cancelled"], status

    def final_events(job_id: str, n_runs: int) -> list[list[str]]:
        runs = runs_named(client, worker.flow_run_id, job_id)
        assert len(runs) == n_runs
        got = [job_events(client, str(r.id)) for r in runs]
        return got if all(len(e) == 3 for e in got) else []

    lifecycle = ["fifoflow.job.queued", "fifoflow.job.started"]
    assert wait_for(lambda: final_events(ok.id, 1), timeout=60) == [
        [*lifecycle, "fifoflow.job.succeeded"]
    ]
    assert wait_for(lambda: final_events(flaky.id, 2), timeout=60) == [
        [*lifecycle, "fifoflow.job.retried"],
        [*lifecycle, "fifoflow.job.succeeded"],
    ]
    assert wait_for(lambda: final_events(dead.id, 1), timeout=60) == [
        [*lifecycle, "fifoflow.job.dead"]
    ]
    assert wait_for(lambda: final_events(stop.id, 1), timeout=60) == [
        [*lifecycle, "fifoflow.job.cancelled"]
    ]

    # An event names its job, queue and dispatcher; "queued" is dated when the job was
    # queued, "dead" carries the error.
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    (run,) = runs_named(client, worker.flow_run_id, dead.id)
    flt = EventFilter(
        event=EventNameFilter(name=["fifoflow.job.queued", "fifoflow.job.dead"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
    )
    events = {e.event: e for e in client.read_events(filter=flt, limit=10).events}
    queued, died = events["fifoflow.job.queued"], events["fifoflow.job.dead"]
    related = {r.id: r.role for r in died.related}  # Prefect adds the flow's own
    assert (
        related.items()
        >= {
            f"fifoflow.job.{q.name}.{dead.id}": "fifoflow-job",
            f"fifoflow.queue.{q.name}": "fifoflow-queue",
            f"prefect.flow-run.{worker.flow_run_id}": "dispatcher",
        }.items()
    )
    assert died.payload["error"] == "RuntimeError: flow failed n=2"
    assert died.payload["attempt"] == 1 and died.payload["target"] == "fftest_flows:fails"
    created = q.record(dead.id)["created_at"]
    assert abs(queued.occurred.timestamp() - created) < 0.01, (queued.occurred, created)


def test_process_slots_run_child_flow_runs_of_the_dispatcher(
    prefect_api: Any,  # noqa: F811 - the fixture imported above
    vqueue: Queue,
    url: str,
    tmp_path: Path,
) -> None:
    client, q = prefect_api, vqueue
    jobs = q.push_many("fftest_flows:where", [{"n": i} for i in range(5)], tags=["proc"])
    marker = str(tmp_path / "flaky")
    flaky = q.push("fftest_flows:flaky_plain", {"marker": marker, "n": 99}, retries=2)
    worker = make_worker(q, url, 1, processes=True, run_name="where-{n}")
    run_in_thread(worker, timeout=240)

    records = [q.record(j.id) for j in jobs]
    assert [r["status"] for r in records] == ["succeeded"] * 5, records
    pids = {r["result"]["pid"] for r in records}
    assert len(pids) == 1 and os.getpid() not in pids  # one slot, one process: not this one
    assert all(r["result"]["tags"] == ["proc"] for r in records)

    runs = [client.read_flow_run(r["flow_run_id"]) for r in records]
    assert [r.name for r in runs] == [f"where-{i}" for i in range(5)]
    # Children of the dispatcher's run: each one's parent task run lies in it.
    for run in runs:
        assert run.state.is_completed() and "proc" in run.tags
        parent_task = client.read_task_run(run.parent_task_run_id)
        assert str(parent_task.flow_run_id) == worker.flow_run_id
    # FIFO: they started in push order.
    starts = [r.start_time for r in runs]
    assert starts == sorted(starts) and len(set(starts)) == 5, starts
    # Prints reach each child's own run from the slot's process.
    for i, r in enumerate(records):
        wait_for(
            lambda r=r, i=i: (
                f"where print n={i}" in [log.message for log in logs_of(client, r["flow_run_id"])]
            ),
            timeout=60,
        )

    # A retry: attempt 1's run Failed, attempt 2's Completed, both children of the dispatcher.
    assert q.record(flaky.id)["status"] == "succeeded"
    tries = runs_named(client, worker.flow_run_id, "where-99")
    assert [t.state.name for t in tries] == ["Failed", "Completed"], tries
    assert wait_for(
        lambda: (
            [job_events(client, str(t.id))[-1:] for t in tries]
            == [["fifoflow.job.retried"], ["fifoflow.job.succeeded"]]
        ),
        timeout=60,
    )
    rows = {row["job"]: row for row in worker.summary()}
    assert rows[jobs[0].id]["state"] == "Completed"
    assert rows[flaky.id]["attempts"] == 2
    # The dispatcher's own run logs each attempt, as with thread slots.
    wait_for(
        lambda: any(jobs[0].id in log.message for log in logs_of(client, worker.flow_run_id)),
        timeout=60,
    )
