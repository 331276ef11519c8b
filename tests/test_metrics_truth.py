"""/metrics against the truth: a real worker process serves it (``--metrics-port 0``), a
real scrape reads it, prometheus_client's exposition parser parses it.

The run of 1,000 jobs has every outcome in a known number: successes in two pools, jobs
that fail once and then succeed, jobs that fail until they are dead, cancelled jobs, and
leases lost (claimed by hand with a 50 ms lease and reaped: one job back in line, one dead
of it, requeued). Its counters must equal the plan, and still equal it once every finished
record has expired (a 1 s result TTL): the counters live apart from the records.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import Processes, wait_for
from fifoflow import Queue, keys
from fifoflow.metrics import OUTCOMES
from fifoflow.settings import Settings
from promkit import Samples, metrics_address, scrape
from qops import claim, maintain

pytestmark = pytest.mark.timeout(120)


def start_worker(
    procs: Processes, tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], Path]:
    """``fifoflow worker fftest_targets ARGS``, its log in a file (read for the port)."""
    log = tmp_path / f"worker-{len(procs.procs)}.log"
    with open(log, "w") as fh:
        proc = procs.worker("fftest_targets", *args, env=env, stdout=fh, stderr=fh)
    return proc, log


def metrics_url(proc: subprocess.Popen[str], log: Path) -> str:
    def address() -> tuple[str, int] | None:
        assert proc.poll() is None, f"the worker exited:\n{log.read_text()}"
        return metrics_address(log)

    host, port = wait_for(address, timeout=30)
    assert host == "127.0.0.1"  # loopback unless told otherwise
    return f"http://{host}:{port}/metrics"


def assert_counters(s: Samples, queue: str, expected: dict[str, dict[str, int]]) -> None:
    """Every outcome counter, pushes and starts of every pool equal ``expected`` (absent: 0),
    and the histograms count one observation per start (wait) and per report (run)."""
    pools = set(s.by("fifoflow_jobs_pushed_total", "pool", queue=queue))
    assert pools == set(expected), pools
    for pool, want in expected.items():
        got = {
            o: s.value("fifoflow_jobs_total", queue=queue, pool=pool, outcome=o) for o in OUTCOMES
        }
        assert got == {o: want.get(o, 0) for o in OUTCOMES}, pool
        assert s.value("fifoflow_jobs_pushed_total", queue=queue, pool=pool) == want["pushed"]
        started = s.value("fifoflow_jobs_started_total", queue=queue, pool=pool)
        assert started == want["started"], pool
        wait_count = s.value("fifoflow_queue_wait_seconds_count", queue=queue, pool=pool)
        assert wait_count == want["started"], pool
        # Every attempt reported (success or failure) is observed; lost ones are not.
        run_count = s.value("fifoflow_run_seconds_count", queue=queue, pool=pool)
        assert run_count == want.get("succeeded", 0) + want.get("failed", 0), pool
        assert started == run_count + want.get("lost", 0), pool  # nothing runs now
        for hist, count in (
            ("fifoflow_queue_wait_seconds", wait_count),
            ("fifoflow_run_seconds", run_count),
        ):
            buckets = s.by(f"{hist}_bucket", "le", queue=queue, pool=pool)
            ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
            values = [v for _, v in ordered]
            assert values == sorted(values) and ordered[-1] == ("+Inf", count), (hist, ordered)
            assert s.value(f"{hist}_sum", queue=queue, pool=pool) >= 0


def job_keys(q: Queue) -> int:
    return sum(1 for _ in q.client.scan_iter(match=f"{keys.prefix(q.name)}job:*", count=1000))


def test_counters_of_1000_jobs_equal_the_truth_and_outlive_the_records(
    url: str, qname: str, procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "FIFOFLOW_URL": url,
        "FIFOFLOW_QUEUE": qname,
        "FIFOFLOW_RESULT_TTL_SECONDS": "1",
        "FIFOFLOW_RETRY_BASE_SECONDS": "0.05",
        "FIFOFLOW_RETRY_MAX_SECONDS": "0.2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    q = Queue(qname, url=url, settings=Settings())  # finished records expire after 1 s
    admin = Queue(qname, url=url, settings=Settings(result_ttl_seconds=3600))

    # Lost leases: two jobs claimed by hand with a 50 ms lease, reaped. The one allowed no
    # lost lease is dead of it; it is requeued (before its record could expire).
    no_loss = admin.push("fftest_targets:add", {"x": 1}, pool="hand", max_lost=0)
    admin.push("fftest_targets:add", {"x": 2}, pool="hand")
    _, claimed = claim(admin, "hand-worker", 2, ["hand"], lease=0.05)
    assert len(claimed) == 2

    def reaped() -> bool:
        maintain(admin)
        return admin.stats()["running"] == 0

    wait_for(reaped, timeout=10)
    assert no_loss.status == "dead" and "WorkerLost" in no_loss.error
    assert admin.requeue([no_loss.id]) == [no_loss.id]

    n_ok, n_gpu, n_flaky, n_dead2, n_dead1, n_cancel = 850, 100, 30, 10, 5, 3
    q.push_many("fftest_targets:add", [{"x": i} for i in range(n_ok)])
    q.push_many("fftest_targets:add", [{"x": i} for i in range(n_gpu)], pool="gpu")
    markers = [tmp_path / f"flaky-{i}" for i in range(n_flaky)]
    q.push_many("fftest_targets:flaky", [{"marker": str(m)} for m in markers], retries=2)
    q.push_many("fftest_targets:boom", [{}] * n_dead2, retries=1)  # fails twice: dead
    q.push_many("fftest_targets:boom", [{}] * n_dead1, retries=0)  # fails once: dead
    later = q.push_many("fftest_targets:add", [{"x": 0}] * n_cancel, delay=3600)
    assert all(job.cancel() for job in later)
    assert 2 + n_ok + n_gpu + n_flaky + n_dead2 + n_dead1 + n_cancel == 1000

    name = f"mw-{qname}"
    args = ["-c", "4", "--pool", "default", "--pool", "gpu", "--pool", "hand", "--name", name]
    worker, log = start_worker(procs, tmp_path, env, *args, "--metrics-port", "0")
    endpoint = metrics_url(worker, log)

    def drained() -> bool:
        st = q.stats()
        return st["queued"] + st["delayed"] + st["running"] == 0

    wait_for(drained, timeout=60)
    assert all(m.exists() for m in markers)
    expected = {
        "default": {
            "pushed": n_ok + n_flaky + n_dead2 + n_dead1 + n_cancel,
            "started": n_ok + 2 * n_flaky + 2 * n_dead2 + n_dead1,
            "succeeded": n_ok + n_flaky,
            "failed": n_flaky + 2 * n_dead2 + n_dead1,
            "retried": n_flaky + n_dead2,
            "dead": n_dead2 + n_dead1,
            "cancelled": n_cancel,
        },
        "gpu": {"pushed": n_gpu, "started": n_gpu, "succeeded": n_gpu},
        # 2 claims by hand (both lost, one of them dead, requeued), then 2 runs.
        "hand": {"pushed": 2, "started": 4, "lost": 2, "dead": 1, "requeued": 1, "succeeded": 2},
    }
    s = scrape(endpoint)
    assert s.types["fifoflow_jobs"] == "counter"
    assert s.types["fifoflow_run_seconds"] == "histogram"
    assert_counters(s, qname, expected)
    assert s.by("fifoflow_queue_jobs", "status", queue=qname)["queued"] == 0
    assert s.value("fifoflow_oldest_queued_age_seconds", queue=qname) == 0
    assert s.by("fifoflow_pool_queued_jobs", "pool", queue=qname) == {
        "default": 0,
        "gpu": 0,
        "hand": 0,
    }
    assert s.value("fifoflow_worker_slots", worker=name) == 4
    assert s.value("fifoflow_worker_slots_busy", worker=name) == 0
    assert s.value("fifoflow_worker_healthy", worker=name) == 1
    assert s.by("fifoflow_pool_slots", "pool", queue=qname) == {"default": 4, "gpu": 4, "hand": 4}

    # Every finished record expires (TTL 1 s); the counters stay.
    def expired() -> bool:
        q.broker.maintain(q.name)
        st = q.stats()
        return job_keys(q) == 0 and st["succeeded"] + st["dead"] + st["cancelled"] == 0

    wait_for(expired, timeout=30)
    after = scrape(endpoint)
    gauges = after.by("fifoflow_queue_jobs", "status", queue=qname)
    assert gauges == dict.fromkeys(gauges, 0.0) and len(gauges) == 7  # the records are gone
    assert_counters(after, qname, expected)  # the counters are not
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    q.close()
    admin.close()


def test_a_worker_killed_with_sigkill_counts_a_lost_lease_and_the_rerun(
    url: str, qname: str, procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FIFOFLOW_URL": url, "FIFOFLOW_QUEUE": qname}
    q = Queue(qname, url=url)
    job = q.push("fftest_targets:sleep", {"seconds": 1.0})
    killed, _ = start_worker(procs, tmp_path, env, "--lease", "1", "--name", f"wa-{qname}")
    wait_for(lambda: job.status == "running", timeout=30)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(10)

    name = f"wb-{qname}"
    worker, log = start_worker(procs, tmp_path, env, "--name", name, "--metrics-port", "0")
    endpoint = metrics_url(worker, log)
    assert job.result(timeout=30) == 1.0
    assert job.lost == 1 and job.attempts == 2

    s = scrape(endpoint)
    assert_counters(s, qname, {"default": {"pushed": 1, "started": 2, "lost": 1, "succeeded": 1}})
    assert s.value("fifoflow_run_seconds_sum", queue=qname, pool="default") >= 1.0
    # The killed worker's registration expires with its lease; the live one stays.
    wait_for(lambda: f"wa-{qname}" not in scrape(endpoint).by("fifoflow_worker_slots", "worker"))
    assert scrape(endpoint).value("fifoflow_worker_slots", worker=name) == 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    q.close()
