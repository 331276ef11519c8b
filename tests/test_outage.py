"""A server outage under load: the embedded server is stopped for a few seconds while a
worker process runs and a producer keeps pushing.

What must hold: the worker process survives; the producer's pushes either succeed or fail
with a clear connection error (never hang, never a half-queued job); the command line
fails with one line while the server is away; and once the server is back every
acknowledged job completes, exactly as if nothing had happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import fifoflow
from conftest import EmbeddedServer, Processes, wait_for
from fifoflow import Queue, server

CLI = Callable[..., subprocess.CompletedProcess[str]]
OUTAGE_SECONDS = 5.0


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """Not the session server: this one gets stopped."""
    srv = EmbeddedServer()
    yield srv
    srv.close()


class Producer(threading.Thread):
    """Pushes a ``record`` job every ``interval`` seconds; remembers what was acknowledged."""

    def __init__(self, url: str, queue: str, log: Path, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.q = Queue(queue, url=url)
        self.log, self.interval = log, interval
        self.acked: dict[int, str] = {}  # n -> job id
        self.errors: list[BaseException] = []
        self.push_seconds: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                job = self.q.push(
                    "fftest_targets:record", {"log": str(self.log), "n": n, "seconds": 0.03}
                )
                self.acked[n] = job.id
            except (redis.RedisError, fifoflow.FifoflowError) as e:
                self.errors.append(e)
            self.push_seconds.append(time.monotonic() - started)
            n += 1
            self.stop.wait(self.interval)


@pytest.mark.timeout(150)
def test_worker_and_producer_ride_out_a_server_outage(
    own_server: EmbeddedServer, procs: Processes, cli: CLI, qname: str, tmp_path: Path
) -> None:
    env = {"FIFOFLOW_URL": own_server.url, "FIFOFLOW_QUEUE": qname}
    log = tmp_path / "starts.jsonl"
    worker = procs.worker("fftest_targets", "--concurrency", "2", "--lease", "4", env=env)
    producer = Producer(own_server.url, qname, log)
    producer.start()
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 20, timeout=30)

    # -- the outage ---------------------------------------------------------------------
    before = len(producer.acked)
    down_at = time.monotonic()
    server.stop(own_server.home)
    while_down = [
        cli("push", "fftest_targets:add", env=env, timeout=30),
        cli("status", "--json", env=env, timeout=30),
    ]
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    assert worker.poll() is None, "the worker died during the outage"
    assert server.ensure_running(own_server.home) == own_server.url
    up_at = time.monotonic()
    # -- after --------------------------------------------------------------------------

    wait_for(lambda: len(producer.acked) >= before + 20, timeout=60)
    producer.stop.set()
    producer.join(30)
    assert not producer.is_alive(), "a push hung"

    for r in while_down:  # the command line: one clear line, no traceback, exit 1 (retry)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: cannot reach the server"), r.stderr
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    # the producer saw clear connection errors while the server was away, nothing else
    assert producer.errors, "no push failed during a 5 s outage?"
    for e in producer.errors:
        assert isinstance(e, redis.ConnectionError | redis.TimeoutError | fifoflow.ConnectionFailed)
        assert str(e) and len(str(e).splitlines()) == 1
    assert max(producer.push_seconds) < 30, "a push blocked too long"

    # every acknowledged job completes once the server is back
    w = cli("wait", "--queue", qname, "--timeout", "90", env=env, timeout=120)
    assert w.returncode == 0, w.stderr
    recovered = time.monotonic() - up_at
    q = Queue(qname, url=own_server.url)
    try:
        succeeded = set(q.job_ids("succeeded"))
        lost = {n: i for n, i in producer.acked.items() if i not in succeeded}
        assert not lost, f"acknowledged jobs that never completed: {lost}"
        assert q.stats()["dead"] == 0
        ran = {json.loads(line)["n"] for line in log.read_text().splitlines()}
        assert set(producer.acked) <= ran
        status = json.loads(cli("status", "--json", "--queue", qname, env=env).stdout)
        assert status["queues"][qname]["succeeded"] == len(succeeded)
        assert status["workers"] == 1
    finally:
        q.close()

    assert worker.poll() is None, "the worker died after the outage"
    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    # CLIENT UNBLOCK must name the blocking connection's new id after the reconnect, or the
    # stop waits out the idle BLPOP (up to 5 s) instead of ~0.2 s
    stop_seconds = time.monotonic() - stopped_at
    assert stop_seconds < 4, f"SIGTERM took {stop_seconds:.1f}s after the outage"
    print(
        f"\noutage {OUTAGE_SECONDS:.0f}s: {len(producer.acked)} pushes acknowledged, "
        f"{len(producer.errors)} refused, all acknowledged completed {recovered:.1f}s after "
        f"the server returned; worker stopped {stop_seconds:.1f}s after SIGTERM"
    )
