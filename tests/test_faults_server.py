"""Server faults a worker and the command line must ride out: a read-only flap, a busy
script, a replica whose master is down, a lost reply, an outage while outcomes are being
reported, an evicting or full server, and a concurrent producer filling the queue between
the batches of a ``push_many``.

Each test that changes server config runs its own redis-server (``faultkit.PrivateRedis``),
stopped by pid at teardown; worker processes are killed at teardown by ``procs``.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fifoflow
from conftest import EmbeddedServer, Processes, run_cli, wait_for
from faultkit import (
    DeadPort,
    DropProxy,
    PrivateRedis,
    busy_window,
    eventually,
    fill_memory,
    free_memory,
    master_down_window,
    read_only_window,
)
from fifoflow import Queue, keys, server
from fifoflow.settings import Settings

RECORD = "fftest_targets:record"


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    srv = PrivateRedis()
    yield srv
    srv.close()


@pytest.fixture
def dead_port() -> Iterator[DeadPort]:
    port = DeadPort()
    yield port
    port.close()


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """An embedded server of this test alone: it gets stopped and started again."""
    srv = EmbeddedServer()
    yield srv
    srv.close()


def starts(log: Path) -> list[dict[str, Any]]:
    """The start lines ``fftest_targets:record`` wrote, in start order."""
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["t"])


def push_records(
    q: Queue, log: Path, n: int, seconds: float, marker: Path | None = None
) -> list[str]:
    """Jobs 0..n-1 that log their start and sleep ``seconds``; with ``marker``, each then
    runs on until that file exists."""
    held = {} if marker is None else {"marker": str(marker)}
    jobs = q.push_many(
        RECORD, [{"log": str(log), "n": i, "seconds": seconds, **held} for i in range(n)]
    )
    return [j.id for j in jobs]


def start_worker(
    procs: Processes, tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], Path]:
    """``fifoflow worker fftest_targets ARGS``, its output in a file (a pipe nobody reads
    could fill up and stall a worker that logs many retries)."""
    out = tmp_path / f"worker-{len(procs.procs)}.log"
    with open(out, "w") as fh:
        proc = procs.worker("fftest_targets", *args, env=env, stdout=fh, stderr=fh)
    return proc, out


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no worker log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def listed(env: dict[str, str], name: str) -> dict[str, Any] | None:
    """The worker's entry in ``fifoflow workers --json``, or None."""
    r = run_cli("workers", "--json", env=env, timeout=30)
    if r.returncode != 0:
        return None
    return next((w for w in json.loads(r.stdout) if w["name"] == name), None)


def oom_logged(wlog: Path) -> bool:
    """The worker logged a write refused by a full server (the first of an episode)."""
    return wlog.exists() and any(
        "server error (" in line and "memory" in line.lower()
        for line in wlog.read_text(errors="replace").splitlines()
    )


def n_succeeded(q: Queue) -> int:
    return len(q.job_ids("succeeded"))


def assert_each_started_once(log: Path, n: int) -> None:
    ran = [r["n"] for r in starts(log)]
    assert sorted(ran) == list(range(n)), f"starts (in order): {ran}"


def assert_stops_promptly(worker: subprocess.Popen[str], wlog: Path, within: float = 5.0) -> None:
    """SIGTERM with nothing running: out well inside the 20 s grace, exit code 0."""
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        rc = worker.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker ignored SIGTERM for 20 s:\n{tail(wlog)}")
    took = time.monotonic() - signalled
    assert rc == 0, f"exit code {rc}:\n{tail(wlog)}"
    assert took < within, f"SIGTERM took {took:.1f}s"


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return lines[0]


def job_keys(client: redis.Redis, queue: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{keys.prefix(queue)}job:*", count=1000))


# -- 1. errors that are not connection errors: READONLY, BUSY, MASTERDOWN -------------------------

JOB_SECONDS = 0.4

FAULTS: dict[str, Callable[[redis.Redis, DeadPort], tuple[float, float]]] = {
    # REPLICAOF a master that never answers: writes get READONLY, the data set stays.
    "read_only_flap": lambda admin, dead: read_only_window(admin, 2.0, dead.port),
    # A script busy-looping 1.5 s: every other command gets BUSY after 100 ms.
    "busy_script": lambda admin, dead: busy_window(admin, 1.5),
    # The same replica with replica-serve-stale-data no: scripts and reads get MASTERDOWN.
    "master_down": lambda admin, dead: master_down_window(admin, 2.0, dead.port),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_worker_survives_a_server_error_window_and_keeps_claiming(
    fault: str,
    private_redis: PrivateRedis,
    dead_port: DeadPort,
    procs: Processes,
    qname: str,
    tmp_path: Path,
) -> None:
    env = {"FIFOFLOW_URL": private_redis.url, "FIFOFLOW_QUEUE": qname}
    q = Queue(qname, url=private_redis.url)
    admin = private_redis.client()
    log = tmp_path / "starts.jsonl"
    n = 10
    push_records(q, log, n, seconds=JOB_SECONDS)
    name = f"w-{fault}-{qname}"
    worker, wlog = start_worker(procs, tmp_path, env, "-c", "2", "--name", name, "--grace", "20")
    wait_for(lambda: len(starts(log)) >= 2, timeout=30)

    began, ended = FAULTS[fault](admin, dead_port)

    # the window did catch completions: jobs started before it that ended inside it
    caught = [r["n"] for r in starts(log) if r["t"] < began < r["t"] + JOB_SECONDS < ended]
    assert caught, "no job finished inside the fault window: the test did not test anything"
    assert worker.poll() is None, f"the worker exited during the {fault} window:\n{tail(wlog)}"

    done = eventually(lambda: n_succeeded(q) == n, timeout=20)
    assert done, (
        f"after the {fault} window: {q.stats()} (jobs caught by it: {caught})\n{tail(wlog)}"
    )
    records = q.jobs()
    assert [r["status"] for r in records] == ["succeeded"] * n
    assert [r["attempts"] for r in records] == [1] * n  # finished during the fault, recorded once
    assert_each_started_once(log, n)

    # it keeps claiming: a job pushed after the window runs
    late = q.push("fftest_targets:add", {"x": 40, "y": 2})
    assert late.result(timeout=10) == 42
    assert worker.poll() is None
    me = wait_for(lambda: listed(env, name), timeout=10)
    health = me["health"]
    assert health["dead_threads"] == 0, health
    assert health["errors"] >= 1 and health["last_error"], health

    assert_stops_promptly(worker, wlog)
    q.close()
    admin.close()


# -- 3. a reply lost on the way: claims are idempotent ------------------------------------------

RUN = 0.2
SOCKET_TIMEOUT = 1.0


@pytest.fixture
def drop_proxy(private_redis: PrivateRedis) -> Iterator[DropProxy]:
    proxy = DropProxy(private_redis.port)
    yield proxy
    proxy.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["silent", "reset"])
def test_a_dropped_claim_reply_keeps_fifo_and_strands_no_job(
    mode: str,
    private_redis: PrivateRedis,
    drop_proxy: DropProxy,
    procs: Processes,
    qname: str,
    tmp_path: Path,
) -> None:
    q = Queue(qname, url=private_redis.url)  # the producer talks to the server directly
    log = tmp_path / "starts.jsonl"
    n = 8
    ids = push_records(q, log, n, seconds=RUN)
    # With one slot, the first reply that carries job 1's id is the reply to its claim.
    drop_proxy.arm(ids[0].encode(), mode)
    env = {
        "FIFOFLOW_URL": drop_proxy.url,
        "FIFOFLOW_QUEUE": qname,
        "FIFOFLOW_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
    }
    name = f"w-drop-{qname}"
    worker, wlog = start_worker(
        procs, tmp_path, env, "-c", "1", "--lease", "10", "--name", name, "--grace", "20"
    )
    assert drop_proxy.dropped.wait(20), f"no reply carried job 1's id:\n{tail(wlog)}"
    print(f"\ndropped ({mode}): {drop_proxy.dropped_reply!r}")

    done = eventually(lambda: n_succeeded(q) == n, timeout=20)
    assert done, f"after a {mode} drop: {q.stats()}, starts {starts(log)}\n{tail(wlog)}"
    order = [r["n"] for r in starts(log)]
    assert order == list(range(n)), f"start order after a {mode} drop: {order}"
    records = q.jobs()
    assert [r["id"] for r in records] == ids
    assert [r["attempts"] for r in records] == [1] * n
    first = records[0]
    took = first["finished_at"] - first["started_at"]
    limit = RUN + (SOCKET_TIMEOUT if mode == "silent" else 0.0) + 1.0
    assert took <= limit, f"job 1 was running {took:.2f}s (limit {limit:.1f}s)"
    assert worker.poll() is None, tail(wlog)
    # the new record fields: no lease ran out, claims numbered in claim (= push) order
    assert [r["lost"] for r in records] == [0] * n
    seqs = [r["claim_seq"] for r in records]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    assert_stops_promptly(worker, wlog)
    q.close()


# -- 10. outcomes reported while the server is away ----------------------------------------------


@pytest.mark.timeout(90)
def test_outcomes_finished_during_an_outage_are_recorded_after_it(
    own_server: EmbeddedServer, procs: Processes, qname: str, tmp_path: Path
) -> None:
    env = {"FIFOFLOW_URL": own_server.url, "FIFOFLOW_QUEUE": qname}
    log = tmp_path / "starts.jsonl"
    n = 12
    q = Queue(qname, url=own_server.url)
    # The first four run until the server is down, however long it takes to get there.
    release = tmp_path / "release"
    push_records(q, log, n, seconds=1.0, marker=release)
    q.close()
    name = f"w-outage-{qname}"
    worker, wlog = start_worker(procs, tmp_path, env, "-c", "4", "--name", name, "--grace", "20")
    wait_for(lambda: len(starts(log)) >= 4, timeout=30)

    server.stop(own_server.home)  # while the first 4 run: they finish with the server away
    release.write_text("go")
    time.sleep(2.0)  # the outage
    assert worker.poll() is None, f"the worker died during the outage:\n{tail(wlog)}"
    assert server.ensure_running(own_server.home) == own_server.url

    q = Queue(qname, url=own_server.url)
    done = eventually(lambda: n_succeeded(q) == n, timeout=20)
    assert done, f"after the outage: {q.stats()}\n{tail(wlog)}"
    records = q.jobs()
    assert [r["status"] for r in records] == ["succeeded"] * n
    assert [r["attempts"] for r in records] == [1] * n
    assert_each_started_once(log, n)
    r = run_cli("status", "--json", "--queue", qname, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["queues"][qname] == {
        "queued": 0,
        "waiting": 0,
        "delayed": 0,
        "running": 0,
        "succeeded": n,
        "dead": 0,
        "cancelled": 0,
    }
    assert status["workers"] == 1
    assert worker.poll() is None, tail(wlog)
    assert wait_for(lambda: listed(env, name), timeout=10)
    assert_stops_promptly(worker, wlog)
    q.close()


# -- 11. an evicting server, a full server ------------------------------------------------------


@pytest.mark.timeout(90)
def test_an_evicting_server_is_refused_by_every_command_unless_allowed(
    qname: str, tmp_path: Path
) -> None:
    srv = PrivateRedis("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    try:
        env = {"FIFOFLOW_URL": srv.url, "FIFOFLOW_QUEUE": qname}
        commands = {
            "push": ["push", "fftest_targets:add", "--params", '{"x": 1}'],
            "status": ["status", "--json"],
            "worker": ["worker", "fftest_targets", "--burst"],
        }
        for what, args in commands.items():
            r = run_cli(*args, env=env, timeout=30)
            assert r.returncode == 2, f"{what}: exit {r.returncode}, stderr {r.stderr!r}"
            assert "maxmemory-policy" in one_line_error(r), f"{what}: {r.stderr!r}"
        admin = srv.client()
        assert admin.dbsize() == 0, "a refused command wrote to the server"

        allowed = {**env, "FIFOFLOW_ALLOW_EVICTION": "1"}
        r = run_cli(*commands["push"], env=allowed, timeout=30)
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        q = Queue(qname, url=srv.url, settings=Settings(allow_eviction=True))
        rec = q.record(job_id)
        assert rec is not None and rec["status"] == "queued"
        q.close()
        admin.close()
    finally:
        srv.close()


def snapshot(q: Queue) -> list[dict[str, Any]]:
    """Every job of the queue, read without writing (stats() would run a script)."""
    return q.jobs()


@pytest.mark.timeout(90)
def test_cli_push_to_a_full_server_fails_with_one_out_of_memory_line_and_changes_nothing(
    private_redis: PrivateRedis, qname: str, tmp_path: Path
) -> None:
    env = {"FIFOFLOW_URL": private_redis.url, "FIFOFLOW_QUEUE": qname}
    q = Queue(qname, url=private_redis.url)
    admin = private_redis.client()
    q.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    fill_memory(admin, private_redis.url, f"{qname}-filler")
    before = snapshot(q)

    r = run_cli("push", "fftest_targets:add", "--params", '{"x": 9}', env=env, timeout=30)
    assert r.returncode == 1, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert "out of memory" in one_line_error(r), r.stderr
    assert snapshot(q) == before
    free_memory(admin)
    q.close()
    admin.close()


@pytest.mark.timeout(90)
def test_python_push_to_a_full_server_raises_server_out_of_memory(
    private_redis: PrivateRedis, qname: str
) -> None:
    q = Queue(qname, url=private_redis.url)
    admin = private_redis.client()
    q.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    fill_memory(admin, private_redis.url, f"{qname}-filler")
    before = snapshot(q)

    with pytest.raises(fifoflow.ServerOutOfMemory) as caught:
        q.push("fftest_targets:add", {"x": 9})
    assert isinstance(caught.value, fifoflow.FifoflowError)
    with pytest.raises(fifoflow.ServerOutOfMemory):
        q.push_many("fftest_targets:add", [{"x": i} for i in range(10)])
    assert snapshot(q) == before
    free_memory(admin)
    q.close()
    admin.close()


@pytest.mark.timeout(90)
def test_running_worker_rides_out_a_full_server_and_finishes_when_memory_frees(
    private_redis: PrivateRedis, procs: Processes, qname: str, tmp_path: Path
) -> None:
    env = {"FIFOFLOW_URL": private_redis.url, "FIFOFLOW_QUEUE": qname}
    q = Queue(qname, url=private_redis.url)
    admin = private_redis.client()
    log = tmp_path / "starts.jsonl"
    n = 6
    push_records(q, log, n, seconds=0.4)
    name = f"w-oom-{qname}"
    worker, wlog = start_worker(procs, tmp_path, env, "-c", "2", "--name", name, "--grace", "20")
    wait_for(lambda: len(starts(log)) >= 2, timeout=30)

    fill_memory(admin, private_redis.url, f"{qname}-filler")

    # Memory stays full until the worker has met it (it logs the first refused write) and
    # every job it started has ended, so their reports (outcome + next claim) go to a full
    # server; then a while longer, for the retries and the heartbeat to write against it.
    def met_full_server() -> bool:
        return oom_logged(wlog) and all(r["t"] + 0.4 < time.time() for r in starts(log))

    wait_for(met_full_server, timeout=30)
    time.sleep(2.5)
    assert worker.poll() is None, f"the worker died while memory was full:\n{tail(wlog)}"
    free_memory(admin)

    done = eventually(lambda: n_succeeded(q) == n, timeout=20)
    assert done, f"after memory freed: {q.stats()}\n{tail(wlog)}"
    assert [r["attempts"] for r in q.jobs()] == [1] * n
    assert_each_started_once(log, n)
    late = q.push("fftest_targets:add", {"x": 1, "y": 1})
    assert late.result(timeout=10) == 2
    me = wait_for(lambda: listed(env, name), timeout=10)
    assert me["health"]["dead_threads"] == 0, me["health"]
    assert_stops_promptly(worker, wlog)
    q.close()
    admin.close()


@pytest.mark.timeout(90)
def test_worker_started_while_memory_is_full_waits_and_registers_once_it_frees(
    private_redis: PrivateRedis, procs: Processes, qname: str, tmp_path: Path
) -> None:
    env = {"FIFOFLOW_URL": private_redis.url, "FIFOFLOW_QUEUE": qname}
    q = Queue(qname, url=private_redis.url)
    admin = private_redis.client()
    log = tmp_path / "starts.jsonl"
    push_records(q, log, 3, seconds=0.1)
    fill_memory(admin, private_redis.url, f"{qname}-filler")

    name = f"w-oom-start-{qname}"
    worker, wlog = start_worker(procs, tmp_path, env, "-c", "2", "--name", name, "--grace", "20")
    # Memory stays full until the worker has started and tried to register (however long
    # its start-up takes), and a while after, for its retries.
    wait_for(lambda: oom_logged(wlog) or worker.poll() is not None, timeout=60)
    time.sleep(1.0)
    assert worker.poll() is None, f"a worker started on a full server exited:\n{tail(wlog)}"
    free_memory(admin)

    assert wait_for(lambda: listed(env, name), timeout=15)
    done = eventually(lambda: n_succeeded(q) == 3, timeout=15)
    assert done, f"after memory freed: {q.stats()}\n{tail(wlog)}"
    assert_each_started_once(log, 3)
    assert_stops_promptly(worker, wlog)
    q.close()
    admin.close()


# -- 12. push_many is all or nothing across its batches -----------------------------------------


def test_push_many_that_a_concurrent_producer_overfills_adds_none_of_its_jobs(
    vqueue: Queue, url: str, qname: str
) -> None:
    vqueue.set_max_length(10_000)
    other = Queue(qname, url=url)
    theirs: list[str] = []

    def concurrent_producer(_n: int) -> None:
        if not theirs:  # after our first batch: another producer takes the room left
            jobs = other.push_many("fftest_targets:add", [{"x": i, "y": 1} for i in range(5000)])
            theirs.extend(j.id for j in jobs)

    with pytest.raises(fifoflow.QueueFull):
        vqueue.push_many(
            "fftest_targets:add", [{"x": i} for i in range(8000)], on_batch=concurrent_producer
        )
    assert len(theirs) == 5000, "the other producer's push did not go through"
    queued = vqueue.job_ids("queued")
    mine = len(set(queued) - set(theirs))
    assert mine == 0, f"{mine} jobs of the failed push_many stayed queued"
    assert sorted(queued) == sorted(theirs)
    assert job_keys(vqueue.client, qname) == 5000  # no half-written record left behind
    other.close()


def test_push_many_with_an_unencodable_key_in_a_later_batch_writes_nothing(
    vqueue: Queue, qname: str
) -> None:
    params = [{"x": i} for i in range(5002)]
    keys_: list[str | None] = [f"k{i}" for i in range(5002)]
    keys_[5000] = "\ud800"  # a lone surrogate: no UTF-8 for it, in the second batch
    with pytest.raises(ValueError):  # UsageError is a ValueError too
        vqueue.push_many("fftest_targets:add", params, keys_=keys_)
    assert vqueue.job_ids() == []
    assert job_keys(vqueue.client, qname) == 0
