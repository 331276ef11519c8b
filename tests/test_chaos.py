"""Chaos: worker processes SIGKILLed and restarted all through a run, and the embedded
server stopped and restarted once in the middle of it.

Every job is ``fftest_targets:record``, which appends (pid, job n, time) to a log as it
starts. At the end the log, the store and the workers' own logs are checked against each
other:

* no job lost: every job pushed ran and is ``succeeded`` with its own result;
* no job recorded ``succeeded`` twice: one ``succeeded`` per job in the store and in the
  workers' logs, and the store's counters agree (attempts = lease losses + 1);
* only jobs in flight at a kill ran twice (a worker's kill, or the server's restart);
* every redelivery came within the lease (+ slack) of the kill that caused it;
* FIFO: jobs were claimed strictly in push order, and started in push order give or take
  the slots in play (the largest displacement is reported);
* ``fifoflow status --json`` agrees with the truth.

The CI version (``test_chaos_short``) is small and quick. ``--chaos-long`` (``make chaos``)
runs the issue's version: 10,000 jobs of 0-20 ms over 4 worker processes of 4 slots, a
random worker killed and restarted every ~2 s. Run it with ``-s`` to see the figures.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from conftest import EmbeddedServer, Processes, wait_for
from fifoflow import Queue, keys, server

CLI = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Plan:
    jobs: int
    workers: int
    slots: int
    job_ms: float  # each job sleeps uniform(0, job_ms) milliseconds
    kill_every: float  # seconds between kills, +-30 %
    lease: float
    budget: float  # seconds the run may take
    seed: int = 20261123


SHORT = Plan(jobs=600, workers=3, slots=2, job_ms=60, kill_every=1.0, lease=2.0, budget=40)
LONG = Plan(jobs=10_000, workers=4, slots=4, job_ms=20, kill_every=2.0, lease=2.0, budget=600)
#: Extra seconds a redelivery may take beyond the lease: reaping runs at most every 50 ms
#: on a busy queue, but a loaded CI machine can add scheduling delays.
SLACK = 2.0


@dataclass
class Kill:
    pid: int
    at: float  # time.time()


@dataclass
class Run:
    plan: Plan
    log: Path
    queue: Queue
    env: dict[str, str]
    fleet: Fleet
    ids: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    outage: tuple[float, float] | None = None  # server down from, back at (time.time())
    started: float = 0.0
    finished: float = 0.0


@pytest.fixture
def chaos_server() -> Iterator[EmbeddedServer]:
    """A server of its own: this test stops and restarts it."""
    srv = EmbeddedServer()
    yield srv
    srv.close()


class Fleet:
    """The worker processes; a killed one is replaced by a fresh one at once."""

    def __init__(self, procs: Processes, plan: Plan, env: dict[str, str], folder: Path) -> None:
        self.procs, self.plan, self.env, self.folder = procs, plan, env, folder
        self.live: list[subprocess.Popen[str]] = []
        self.live_logs: list[Path] = []  # the stderr of each live worker, in step with live
        self.logs: list[Path] = []
        self._files: list[IO[str]] = []

    def start(self) -> None:
        path = self.folder / f"worker-{len(self.logs)}.log"
        fh = open(path, "w")  # noqa: SIM115 - closed in close()
        self._files.append(fh)
        self.logs.append(path)
        self.live_logs.append(path)
        self.live.append(
            self.procs.worker(
                "fftest_targets",
                "--concurrency", str(self.plan.slots),
                "--lease", str(self.plan.lease),
                "--grace", "10",
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=fh,
            )
        )  # fmt: skip

    def assert_alive(self) -> None:
        """Every worker the fleet counts on still runs (else: its exit code and log)."""
        for p, path in zip(self.live, self.live_logs, strict=True):
            if p.poll() is not None:
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-5:])
                raise AssertionError(f"worker pid {p.pid} exited with {p.returncode}:\n{tail}")

    def wait_up(self, queue: Queue) -> None:
        """Wait until every live worker has registered: it is past its start-up, which
        needs the server (``fifoflow worker`` exits 1 at once when it cannot reach it)."""

        def up() -> bool:
            self.assert_alive()
            registered = {w.get("pid") for w in queue.broker.live_workers()}
            return all(p.pid in registered for p in self.live)

        wait_for(up, timeout=60)

    def kill_one(self, rng: random.Random) -> Kill:
        i = rng.randrange(len(self.live))
        victim = self.live.pop(i)
        self.live_logs.pop(i)
        os.kill(victim.pid, signal.SIGKILL)
        kill = Kill(victim.pid, time.time())
        victim.wait(10)
        self.start()
        return kill

    def stop(self) -> list[int | None]:
        for p in self.live:
            p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.live:
            try:
                codes.append(p.wait(30))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def close(self) -> None:
        for fh in self._files:
            fh.close()


def run_chaos(plan: Plan, srv: EmbeddedServer, procs: Processes, folder: Path) -> Run:
    rng = random.Random(plan.seed)
    qname = f"chaos-{os.getpid()}-{rng.randrange(10**6)}"
    # Kills here are the test's, not the jobs' doing: no job is a poison job.
    env = {"FIFOFLOW_URL": srv.url, "FIFOFLOW_QUEUE": qname, "FIFOFLOW_MAX_LOST": "1000"}
    q = Queue(qname, url=srv.url)
    fleet = Fleet(procs, plan, env, folder)
    run = Run(plan, folder / "starts.jsonl", q, env, fleet)
    params = [
        {"log": str(run.log), "n": n, "seconds": round(rng.uniform(0, plan.job_ms) / 1000, 4)}
        for n in range(plan.jobs)
    ]
    run.ids = [j.id for j in q.push_many("fftest_targets:record", params)]
    assert len(run.ids) == plan.jobs

    run.started = time.time()
    deadline = time.monotonic() + plan.budget
    for _ in range(plan.workers):
        fleet.start()

    def succeeded() -> int:
        with contextlib.suppress(redis.RedisError):
            return int(q.client.zcard(keys.queue_key(qname, keys.Key.SUCCEEDED)))
        return -1

    next_kill = time.monotonic() + plan.kill_every * rng.uniform(0.7, 1.3)
    while (done := succeeded()) < plan.jobs:
        assert time.monotonic() < deadline, f"only {done} of {plan.jobs} done in {plan.budget}s"
        if run.outage is None and done >= plan.jobs * 0.4:
            # once, mid-run: the server goes away and comes back (a kill is skipped for it).
            # Not while the replacement of the last kill is still starting: a worker that
            # cannot reach the server at start exits 1 (by design), and the fleet would
            # then be a worker short for the rest of the run.
            fleet.wait_up(q)
            down = time.time()
            server.stop(srv.home)
            time.sleep(0.5)
            server.ensure_running(srv.home)
            run.outage = (down, time.time())
            next_kill = time.monotonic() + plan.kill_every * rng.uniform(0.7, 1.3)
        elif time.monotonic() >= next_kill:
            run.kills.append(fleet.kill_one(rng))
            next_kill = time.monotonic() + plan.kill_every * rng.uniform(0.7, 1.3)
        time.sleep(0.02)
    run.finished = time.time()
    return run


def analyse(run: Run, cli: CLI) -> dict[str, Any]:
    plan, q, ids, fleet, env = run.plan, run.queue, run.ids, run.fleet, run.env
    slots_in_play = plan.workers * plan.slots

    # -- the start log ------------------------------------------------------------------
    starts: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    by_pid: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    for line in run.log.read_text().splitlines():
        rec = json.loads(line)
        starts[rec["n"]].append((rec["t"], rec["pid"]))
        by_pid[rec["pid"]].append((rec["t"], rec["n"]))
    for runs in [*starts.values(), *by_pid.values()]:
        runs.sort()

    # -- 0 lost: every job ran and succeeded with its own result ------------------------
    pipe = q.client.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(keys.job(q.name, i))
    raw = pipe.execute()
    not_run = [n for n in range(plan.jobs) if n not in starts]
    not_succeeded = [n for n, r in enumerate(raw) if r.get("status") != "succeeded"]
    wrong_result = [n for n, r in enumerate(raw) if r.get("result") != str(n)]
    assert not not_run, f"jobs that never ran: {not_run[:20]}"
    assert not not_succeeded, f"jobs not succeeded: {not_succeeded[:20]}"
    assert not wrong_result, f"jobs with a wrong result: {wrong_result[:20]}"

    # -- succeeded exactly once ---------------------------------------------------------
    assert int(q.client.zcard(keys.queue_key(q.name, keys.Key.SUCCEEDED))) == plan.jobs
    counters_off = [
        n
        for n, r in enumerate(raw)
        if int(r.get("attempts", 0)) != int(r.get("lost", 0)) + 1 or r.get("failures")
    ]
    assert not counters_off, f"attempts != lease losses + 1 for {counters_off[:20]}"
    acks: collections.Counter[str] = collections.Counter()
    stale = 0
    for path in fleet.logs:
        for line in path.read_text().splitlines():
            if " fftest_targets:record succeeded in " in line:
                acks[line.split(" job ", 1)[1].split()[0]] += 1
            elif " fftest_targets:record stale in " in line:
                stale += 1
    twice = {i: c for i, c in acks.items() if c > 1}
    assert not twice, f"recorded succeeded twice: {twice}"

    # -- only jobs in flight at a kill ran twice; redelivery within the lease -----------
    seconds = [float(json.loads(r["params"])["seconds"]) for r in raw]
    kill_of = {k.pid: k.at for k in run.kills}
    assert run.outage is not None
    down, up = run.outage
    reruns = {n: r for n, r in starts.items() if len(r) > 1}
    unexplained: list[tuple[Any, ...]] = []
    kill_delays: list[tuple[float, float]] = []  # (delay, of it the server was down)
    outage_delays: list[float] = []
    for n, runs in reruns.items():
        for (t1, pid1), (t2, _) in itertools.pairwise(runs):

            def in_flight(t: float, t1: float = t1, t2: float = t2, n: int = n) -> bool:
                """Started before t, run again after it, and not done long before it (a
                finished job is acknowledged within moments; a lease covers the rest)."""
                return t1 <= t <= t2 and t - (t1 + seconds[n]) < plan.lease

            killed_at = kill_of.get(pid1)
            if killed_at is not None and in_flight(killed_at):
                delay = t2 - killed_at
                lost_to_restart = overlap((killed_at, t2), run.outage)
                kill_delays.append((delay, lost_to_restart))
                limit = plan.lease + SLACK + lost_to_restart
                assert delay <= limit, f"job {n} redelivered {delay:.2f}s after the kill"
            elif in_flight(down):  # the server's restart is a kill too: of every lease
                delay = t2 - up
                outage_delays.append(delay)
                limit = plan.lease + SLACK
                assert delay <= limit, f"job {n} redelivered {delay:.2f}s after the restart"
            else:
                unexplained.append((n, runs, killed_at, by_pid[pid1][-plan.slots - 2 :]))
    assert not unexplained, f"jobs that ran twice though not in flight at a kill: {unexplained}"

    # -- FIFO ------------------------------------------------------------------------------
    clean = [n for n, r in enumerate(raw) if int(r.get("lost", 0)) == 0]
    # claims: the queue's claim counter (not the server's clock, which can step back);
    # one claim each for these jobs
    claim_order = sorted(clean, key=lambda n: int(raw[n]["claim_seq"]))
    claim_disp = max(displacements(claim_order), default=0)
    # starts: as the targets saw them, across processes and threads
    start_order = sorted(clean, key=lambda n: starts[n][0][0])
    start_disp = sorted(displacements(start_order)) or [0]
    start_p95 = start_disp[int(len(start_disp) * 0.95)]
    start_p99 = start_disp[int(len(start_disp) * 0.99)]
    assert claim_disp == 0, f"jobs were claimed out of push order (by up to {claim_disp})"

    # -- what fifoflow status says -----------------------------------------------------
    def status() -> dict[str, Any]:
        r = cli("status", "--json", "--queue", q.name, env=env)
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    truth = {"queued": 0, "waiting": 0, "delayed": 0, "running": 0, "succeeded": plan.jobs}
    truth["dead"] = 0
    truth["cancelled"] = 0
    assert status()["queues"][q.name] == truth

    # the killed workers' registrations expire (3 leases); the live ones stay listed
    def live_listed() -> bool:
        fleet.assert_alive()
        return bool(status()["workers"] == plan.workers)

    wait_for(live_listed, timeout=3 * plan.lease + 10)
    codes = fleet.stop()
    assert codes == [0] * plan.workers, f"exit codes on SIGTERM: {codes}"
    wait_for(lambda: status()["workers"] == 0, timeout=10)

    return {
        "jobs": plan.jobs,
        "workers x slots": f"{plan.workers} x {plan.slots}",
        "job length": f"0-{plan.job_ms:g} ms",
        "lease": f"{plan.lease:g} s",
        "wall time": f"{run.finished - run.started:.1f} s",
        "throughput": f"{plan.jobs / (run.finished - run.started):.0f} jobs/s",
        "worker kills (SIGKILL)": len(run.kills),
        "server restarts": 1,
        "server down": f"{up - down:.2f} s",
        "jobs lost": len(not_run) + len(not_succeeded),
        "recorded succeeded twice": len(twice),
        "starts logged": sum(len(r) for r in starts.values()),
        "jobs run twice or more": len(reruns),
        "  in flight at a worker kill": len(kill_delays),
        "  in flight at the server restart": len(outage_delays),
        "  unexplained": len(unexplained),
        "most runs of one job": max((len(r) for r in starts.values()), default=0),
        "lease losses (store)": sum(int(r.get("lost", 0)) for r in raw),
        "stale outcomes refused": stale,
        "max redelivery after a kill": "{:.2f} s (server down {:.2f} s of it)".format(
            *max(kill_delays, default=(0.0, 0.0))
        ),
        "limit": f"lease {plan.lease:g} s + slack {SLACK:g} s (+ server downtime)",
        "max redelivery after the restart": f"{max(outage_delays, default=0):.2f} s",
        "FIFO displacement, claims (max)": claim_disp,
        "FIFO displacement, starts (p95)": f"{start_p95} (slots in play {slots_in_play})",
        "FIFO displacement, starts (p99)": start_p99,
        "FIFO displacement, starts (max)": start_disp[-1],
        "status --json == truth": "yes",
    }


def overlap(window: tuple[float, float], other: tuple[float, float]) -> float:
    return max(0.0, min(window[1], other[1]) - max(window[0], other[0]))


def displacements(order: list[int]) -> list[int]:
    """|place in ``order`` - place in push order| of each job in ``order``."""
    pushed = {n: i for i, n in enumerate(sorted(order))}
    return [abs(i - pushed[n]) for i, n in enumerate(order)]


def report(figures: dict[str, Any]) -> None:
    width = max(len(k) for k in figures)
    print("\nchaos run")
    print("-" * (width + 30))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    print("-" * (width + 30))


def check(plan: Plan, srv: EmbeddedServer, procs: Processes, tmp_path: Path, cli: CLI) -> None:
    run = run_chaos(plan, srv, procs, tmp_path)
    try:
        figures = analyse(run, cli)
    finally:
        run.fleet.close()
        run.queue.close()
    report(figures)
    # Claims are exactly FIFO (asserted above). A start trails its claim by thread and
    # process scheduling, so the order the targets saw is FIFO give or take the slots in
    # play; the rare outlier is a worker process the OS did not run for a moment.
    p95 = figures["FIFO displacement, starts (p95)"]
    assert int(str(p95).split()[0]) <= plan.workers * plan.slots, p95


@pytest.mark.timeout(120)
def test_chaos_short(
    request: pytest.FixtureRequest,
    chaos_server: EmbeddedServer,
    procs: Processes,
    tmp_path: Path,
    cli: CLI,
) -> None:
    if request.config.getoption("--chaos-long"):
        pytest.skip("--chaos-long runs the long version instead")
    began = time.monotonic()
    check(SHORT, chaos_server, procs, tmp_path, cli)
    assert time.monotonic() - began < 60


@pytest.mark.timeout(900)
def test_chaos_long(
    request: pytest.FixtureRequest,
    chaos_server: EmbeddedServer,
    procs: Processes,
    tmp_path: Path,
    cli: CLI,
) -> None:
    if not request.config.getoption("--chaos-long"):
        pytest.skip("the issue's full chaos run: make chaos (pytest --chaos-long -s)")
    check(LONG, chaos_server, procs, tmp_path, cli)
