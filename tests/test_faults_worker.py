"""Worker faults: jobs and workers that die, hang, exit or misbehave, against real
`fifoflow worker` processes on the embedded Valkey.

Each test waits on state (job records, the server's client list, log lines the targets of
``fftest_faulty`` write), never on a guessed sleep, except sleeps that create the window a
scenario needs. Figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

import fftest_faulty
import fifoflow
from conftest import Processes, blocked_ids, wait_blocked, wait_for
from fifoflow import Queue, keys, scripts
from fifoflow.broker import Broker, nonce
from fifoflow.records import PushSpec

FAST = {"FIFOFLOW_RETRY_BASE_SECONDS": "0.05"}
FAULTY = "fftest_faulty"


# -- helpers ---------------------------------------------------------------------------------


def events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines a target of fftest_faulty wrote, in file order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        # A line being written by another thread may be incomplete: skip it for now.
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def starts_of(log: Path, n: Any) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("n") == n and e.get("ev") == "start"]


def status(q: Queue, job_id: str) -> str | None:
    rec = q.record(job_id)
    return None if rec is None else str(rec["status"])


def all_finished(q: Queue) -> bool:
    s = q.stats()
    return s["queued"] + s["delayed"] + s["running"] == 0


def live(client: redis.Redis, name: str) -> dict[str, Any] | None:
    for w in Broker(client).live_workers():
        if w["name"] == name:
            return w
    return None


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:  # between images while it re-executes itself
        return 0


class Worker:
    """A `fifoflow worker` with its stderr in a file (read at any time, never a full pipe)."""

    def __init__(
        self, procs: Processes, tmp: Path, name: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.stderr_path = tmp / f"{name}.stderr"
        fd = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.proc = procs.worker(*args, "--name", name, env=env, stderr=fd)
        finally:
            os.close(fd)  # the child has its own copy

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def registered(self, client: redis.Redis) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker {self.name} exited with {self.proc.returncode}: {self.stderr()}"
                )
            return live(client, self.name)

        found: dict[str, Any] = wait_for(check, timeout=30)
        return found


def push_back_to_back(
    client: redis.Redis, jobs: Sequence[tuple[str, str, dict[str, Any]]]
) -> list[str]:
    """Push jobs (queue, target, params) in this order, back to back in ONE write, so the
    server runs them all in one read, before any worker they wake gets its next command in.
    Returns the job ids.

    Not MULTI/EXEC: blocked clients are served after EXEC, when every token is there, and a
    wait re-run then takes its first queue's own token. Back to back, the first push wakes
    the worker blocked first with that queue's token alone, and the second push lands before
    the claim the worker pipelined behind its wait runs.

    The one place that knows how a push looks on the wire: an FCALL of the push function
    with the arguments ``Broker.push`` builds (one job, default options)."""
    lib = scripts.library()
    client.execute_command("FUNCTION", "LOAD", "REPLACE", lib.source)  # loaded before the two
    pipe = client.pipeline(transaction=False)
    for queue, target, params in jobs:
        client.sadd(keys.QUEUES, queue)  # as Broker.push does
        spec = PushSpec(target).args()
        args = [nonce(), "0", keys.id_suffix(queue), 604800, *spec, json.dumps(params), ""]
        pipe.execute_command("FCALL", lib.functions["push"], 1, keys.prefix(queue), *args)
    replies = pipe.execute()
    return [str(r[1]) for r in replies]


# -- 2. poison jobs --------------------------------------------------------------------------


def test_poison_job_that_kills_its_worker_goes_dead_and_the_line_moves_on(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    poison = vqueue.push(f"{FAULTY}:suicide", {"log": str(log)}, retries=1)
    good = vqueue.push_many(f"{FAULTY}:record", [{"log": str(log), "n": i} for i in range(5)])
    env = {**FAST, "FIFOFLOW_LEASE_SECONDS": "2"}
    # A supervisor: one 1-slot worker at a time; each time one dies, start another.
    started = deaths = 0
    t0 = time.monotonic()
    while started < 6 and not all_finished(vqueue):
        w = procs.worker(FAULTY, "-c", "1", env=env)
        started += 1
        wait_for(lambda: w.poll() is not None or all_finished(vqueue), timeout=30)  # noqa: B023
        if w.poll() is not None:
            deaths += 1
    rec = vqueue.record(poison.id)
    assert rec is not None
    deliveries = len(starts_of(log, "poison"))
    print(
        f"\npoison: {deliveries} deliveries, {deaths} worker deaths, {started} workers, "
        f"{time.monotonic() - t0:.1f}s; status {rec['status']}, lost {rec.get('lost')}, "
        f"error {rec['error']!r}"
    )
    assert rec["status"] == "dead", f"poison job still {rec['status']} after {deliveries} runs"
    assert rec.get("lost") == 3  # max_lost 2 by default: the third loss is one too many
    assert deliveries == deaths == 3
    assert "lost its worker 3 times" in (rec["error"] or "")
    assert [j.result(timeout=10) for j in good] == list(range(5))
    assert [e["n"] for e in events(log) if e["n"] != "poison"] == list(range(5))


# -- 4. an idle worker is quiet and quick ---------------------------------------------------


def test_idle_worker_logs_no_warnings_and_starts_a_push_at_once(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    w = Worker(procs, tmp_path, "w-idle", FAULTY, "-c", "1")
    w.registered(vqueue.client)
    time.sleep(12)  # the window: over twice the 5.5 s period of today's spurious warning
    assert w.proc.poll() is None
    warnings = [line for line in w.stderr().splitlines() if "WARNING" in line]
    print(f"\nwarnings while idle 12 s: {len(warnings)}: {warnings[:2]}")
    assert warnings == []

    pushed = time.time()
    vqueue.push(f"{FAULTY}:record", {"log": str(log), "n": 1})
    start = wait_for(lambda: starts_of(log, 1), timeout=20)[0]["t"]
    print(f"push -> start on the idle worker: {start - pushed:.3f}s")
    assert start - pushed < 1.0


# -- 5. a wake token taken for another queue is handed back ------------------------------


def test_job_does_not_wait_beside_an_idle_worker_when_another_took_its_wake_token(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    q1, q2 = f"{vqueue.name}-1", f"{vqueue.name}-2"
    client = vqueue.client
    before = blocked_ids(client)
    w1 = procs.worker(FAULTY, "-q", q1, "-q", q2, "-c", "1", "--name", "w1")
    wait_blocked(client, before, w1)
    before = blocked_ids(client)
    w2 = procs.worker(FAULTY, "-q", q2, "-c", "1", "--name", "w2")
    wait_blocked(client, before, w2)
    # A first: W1, blocked first, is woken by q2's token alone; B lands in q1 before W1's
    # claim runs, and that claim serves W1's first queue, q1: B. A must not wait for W2.
    # B runs until the test releases it: W1 stays busy for as long as the checks take.
    pushed = time.time()
    a_id, b_id = push_back_to_back(
        client,
        [
            (q2, f"{FAULTY}:record", {"log": str(log), "n": "A"}),
            (q1, f"{FAULTY}:hold", {"log": str(log), "n": "B", "marker": str(release)}),
        ],
    )
    a = wait_for(lambda: starts_of(log, "A"), timeout=20)[0]
    b = starts_of(log, "B")
    print(
        f"\nA (q2) started {a['t'] - pushed:.3f}s after the push, by pid {a['pid']} "
        f"(w1 {w1.pid}, w2 {w2.pid}); B (q1) started: {bool(b)}"
    )
    assert a["t"] - pushed < 1.5
    assert b and b[0]["pid"] == w1.pid  # the scenario: W1 took B from q1
    assert status(Queue(q2, broker=Broker(client)), a_id) in ("running", "succeeded")
    assert status(Queue(q1, broker=Broker(client)), b_id) == "running"
    release.write_text("go")


# -- 6. abandoned threads are bounded ---------------------------------------------------------


def test_abandoned_threads_stay_bounded_and_the_worker_reexecutes_itself(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    before = blocked_ids(vqueue.client)
    w = Worker(procs, tmp_path, "w-abandon", FAULTY, "-c", "1", "--max-abandoned", "2")
    w.registered(vqueue.client)
    wait_blocked(vqueue.client, before, w.proc)
    base = thread_count(w.pid)
    bound = base + 2 + 2  # the cap, plus slack for a replacement slot and a passing helper
    sleepers = vqueue.push_many(
        f"{FAULTY}:record",
        [{"log": str(log), "n": i, "seconds": 30} for i in range(8)],
        timeout=0.3,
        retries=0,
    )
    peak = base
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peak = max(peak, thread_count(w.pid))
        if all(status(vqueue, j.id) == "dead" for j in sleepers):
            break
        time.sleep(0.02)
    peak = max(peak, thread_count(w.pid))
    reexecs = [line for line in w.stderr().splitlines() if "re-executing" in line]
    print(f"\nthreads: baseline {base}, peak {peak}, bound {bound}; re-executions: {len(reexecs)}")
    assert all(status(vqueue, j.id) == "dead" for j in sleepers)
    assert peak <= bound
    assert reexecs
    # Still the same process, still working.
    after = vqueue.push(f"{FAULTY}:record", {"log": str(log), "n": "after"})
    assert after.result(timeout=30) == "after"
    assert w.proc.poll() is None
    assert starts_of(log, "after")[0]["pid"] == w.pid


def test_retry_never_runs_beside_its_abandoned_attempt_in_one_process(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "ticks.log"
    job = vqueue.push(f"{FAULTY}:ticking", {"log": str(log), "seconds": 2}, timeout=0.5, retries=1)
    procs.worker(FAULTY, "-c", "1", env=FAST)
    wait_for(lambda: status(vqueue, job.id) == "dead", timeout=30)

    def attempts() -> dict[str, list[dict[str, Any]]]:
        by: dict[str, list[dict[str, Any]]] = {}
        for e in events(log):
            by.setdefault(e["attempt"], []).append(e)
        return by

    def settled() -> bool:
        # Every attempt ended, or the log has been quiet for longer than an attempt lives
        # (2 s): a killed thread, not one a busy machine left waiting for a while.
        evs = events(log)
        ended = all(any(e["ev"] == "end" for e in es) for es in attempts().values())
        return ended or (bool(evs) and time.time() - evs[-1]["t"] > 3.0)

    wait_for(settled, timeout=30)
    runs = sorted(
        (
            (es[0]["pid"], min(e["t"] for e in es), max(e["t"] for e in es))
            for es in attempts().values()
        ),
        key=lambda r: r[1],
    )
    shown = [(p, round(s, 3), round(e, 3)) for p, s, e in runs]
    print(f"\nattempts (pid, start, last sign of life): {shown}")
    assert len(runs) == 2
    overlaps = [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[0] == b[0] and b[1] < a[2]
    ]
    for a, b in overlaps:
        print(f"overlap in pid {a[0]}: the retry started {a[2] - b[1]:.3f}s before the first ended")
    assert overlaps == []


# -- 8. fail fast -----------------------------------------------------------------------------


def test_worker_with_an_unknown_module_exits_2_at_once_with_one_line(
    vqueue: Queue, procs: Processes
) -> None:
    t0 = time.monotonic()
    w = procs.worker("nosuchmod")
    try:
        _, err = w.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("`fifoflow worker nosuchmod` still running after 20 s")
    took = time.monotonic() - t0
    lines = [line for line in err.splitlines() if line.strip()]
    print(f"\nexit {w.returncode} in {took:.2f}s: {lines}")
    assert w.returncode == 2
    assert len(lines) == 1 and "nosuchmod" in lines[0]
    assert "Traceback" not in err
    assert took < 10


def test_target_that_cannot_run_goes_dead_at_its_first_attempt(
    vqueue: Queue, procs: Processes
) -> None:
    missing = vqueue.push("fftest_targets:nope", {}, retries=3)
    unbound = vqueue.push("fftest_targets:add", {"z": 1}, retries=3)
    w = procs.worker("fftest_targets", "-c", "1", "--burst", env=FAST)
    assert w.wait(60) == 0
    m, u = vqueue.record(missing.id), vqueue.record(unbound.id)
    assert m is not None and u is not None
    print(
        f"\nmissing: {m['status']} after {m['attempts']}: {m['error']!r}"
        f"\nunbound: {u['status']} after {u['attempts']}: {u['error']!r}"
    )
    assert (m["status"], m["attempts"]) == ("dead", 1)
    assert "nope" in m["error"]
    assert (u["status"], u["attempts"]) == ("dead", 1)
    assert re.search(r"\bz\b", u["error"])


def test_declared_non_retryable_errors_go_dead_at_once_and_others_still_retry(
    vqueue: Queue, procs: Processes
) -> None:
    assert hasattr(fifoflow, "NoRetry"), "fifoflow.NoRetry does not exist"
    assert hasattr(fifoflow, "no_retry"), "fifoflow.no_retry does not exist"
    assert issubclass(fftest_faulty.BadInput, fifoflow.NoRetry)
    jobs = {
        "NoRetry": vqueue.push(f"{FAULTY}:refuse", {"message": "no use"}, retries=3),
        "subclass": vqueue.push(f"{FAULTY}:refuse_with_subclass", {}, retries=3),
        "no_retry(KeyError)": vqueue.push(f"{FAULTY}:lookup", {"key": "unknown"}, retries=3),
    }
    plain = vqueue.push("fftest_targets:boom", {"message": "try again"}, retries=1)
    w = procs.worker(FAULTY, "fftest_targets", "-c", "1", "--burst", env=FAST)
    assert w.wait(60) == 0
    recs = {k: vqueue.record(j.id) for k, j in jobs.items()}
    for k, r in recs.items():
        assert r is not None
        print(f"\n{k}: {r['status']} after {r['attempts']}: {r['error']!r}")
    assert {k: (r["status"], r["attempts"]) for k, r in recs.items() if r} == {
        k: ("dead", 1) for k in jobs
    }
    assert "no use" in recs["NoRetry"]["error"]  # type: ignore[index]
    assert "KeyError" in recs["no_retry(KeyError)"]["error"]  # type: ignore[index]
    p = vqueue.record(plain.id)
    assert p is not None
    assert (p["status"], p["attempts"], p["error"]) == ("dead", 2, "ValueError: try again")


# -- 9. SystemExit and KeyboardInterrupt from a target ---------------------------------------


def test_target_raising_systemexit_or_keyboardinterrupt_is_a_failed_attempt(
    vqueue: Queue, procs: Processes, cli: Any
) -> None:
    exits = vqueue.push(f"{FAULTY}:exit_now", {"code": 2}, retries=1)
    interrupts = vqueue.push(f"{FAULTY}:interrupt", {}, retries=1)
    behind = vqueue.push("fftest_targets:add", {"x": 40, "y": 2})
    t0 = time.monotonic()
    w = procs.worker(FAULTY, "fftest_targets", "-c", "1", "--burst", env=FAST)
    waited = cli("wait", "--queue", vqueue.name, "--timeout", "20")
    try:
        code = w.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    e, i = vqueue.record(exits.id), vqueue.record(interrupts.id)
    assert e is not None and i is not None
    print(
        f"\n`fifoflow wait`: exit {waited.returncode}; worker --burst: exit {code} "
        f"after {time.monotonic() - t0:.1f}s"
        f"\nsys.exit: {e['status']} after {e['attempts']}: {e['error']!r}"
        f"\nKeyboardInterrupt: {i['status']} after {i['attempts']}: {i['error']!r}"
    )
    assert waited.returncode == 0, waited.stderr
    assert code == 0
    assert (e["status"], e["attempts"]) == ("dead", 2)
    assert (e["error"] or "").startswith("SystemExit")
    assert (i["status"], i["attempts"]) == ("dead", 2)
    assert (i["error"] or "").startswith("KeyboardInterrupt")
    assert behind.result(timeout=5) == 42


# -- 13. an idle worker wakes for the next event ------------------------------------------


def test_delayed_job_pushed_while_a_worker_idles_starts_at_its_due_time(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    before = blocked_ids(vqueue.client)
    w = procs.worker(FAULTY, "-c", "1")
    wait_blocked(vqueue.client, before, w)
    job = vqueue.push(f"{FAULTY}:record", {"log": str(log), "n": 1}, delay=1.0)
    start = wait_for(lambda: starts_of(log, 1), timeout=20)[0]["t"]
    rec = vqueue.record(job.id)
    assert rec is not None
    late = start - (rec["created_at"] + 1.0)
    print(f"\ndelayed job started {late:.3f}s after its due time")
    assert late < 1.0


def test_job_of_a_killed_worker_restarts_on_an_idle_worker_by_its_lease_deadline(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    log, marker = tmp_path / "events.log", tmp_path / "release"
    env = {"FIFOFLOW_LEASE_SECONDS": "3"}
    vqueue.push(f"{FAULTY}:hold", {"log": str(log), "n": 1, "marker": str(marker)})
    v = procs.worker(FAULTY, "-c", "1", env=env)
    wait_for(lambda: starts_of(log, 1), timeout=30)
    before = blocked_ids(vqueue.client)
    idle = procs.worker(FAULTY, "-c", "1", env=env)
    wait_blocked(vqueue.client, before, idle)
    killed = time.time()
    os.kill(v.pid, signal.SIGKILL)
    again = wait_for(lambda: starts_of(log, 1)[1:], timeout=20)[0]
    marker.write_text("go")
    delay = again["t"] - killed
    print(f"\nkill -9 -> restart on the idle worker: {delay:.3f}s (lease 3 s)")
    assert again["pid"] == idle.pid
    assert delay < 3 + 1.5  # the lease deadline (<= kill + 3 s) plus 1.5 s, at the latest


# -- 14. claim order ---------------------------------------------------------------------------


def test_claim_seq_is_unique_and_follows_push_order(vqueue: Queue, procs: Processes) -> None:
    ids = [j.id for j in vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(50)])]
    w = procs.worker("fftest_targets", "-c", "3", "--burst")
    assert w.wait(60) == 0
    recs = [vqueue.record(i) for i in ids]
    seqs = [r.get("claim_seq") if r else None for r in recs]
    print(f"\nclaim_seq of the first ten: {seqs[:10]}")
    assert all(isinstance(s, int) for s in seqs)
    assert len(set(seqs)) == 50
    by_claim = [i for _, i in sorted(zip(seqs, ids, strict=True))]  # type: ignore[type-var]
    assert by_claim == sorted(ids) == ids


# -- death detection ---------------------------------------------------------------------


def test_job_of_a_killed_worker_restarts_on_an_idle_worker_within_a_second(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    """kill -9 of a busy worker, three times: its job restarts on a live idle worker within
    ~1 s (not at its 10 s lease), at its place: before the jobs pushed behind it."""
    delays: list[float] = []
    for r in range(3):
        name = f"{vqueue.name}-r{r}"
        env = {"FIFOFLOW_QUEUE": name}
        log, marker = tmp_path / f"events-{r}.log", tmp_path / f"release-{r}"
        q = Queue(name, broker=vqueue.broker)
        j1 = q.push(f"{FAULTY}:hold", {"log": str(log), "n": 1, "marker": str(marker)})
        v = procs.worker(FAULTY, "-c", "1", env=env)
        wait_for(lambda: starts_of(log, 1), timeout=30)  # noqa: B023
        before = blocked_ids(q.client)
        idle = procs.worker(FAULTY, "-c", "1", env=env)
        wait_blocked(q.client, before, idle)
        # Behind J1, due 2 s from now: claimable only if J1 is not back by then.
        behind = q.push_many(
            f"{FAULTY}:record", [{"log": str(log), "n": n} for n in range(2, 6)], delay=2.0
        )
        killed = time.time()
        os.kill(v.pid, signal.SIGKILL)
        again = wait_for(lambda: starts_of(log, 1)[1:], timeout=20)[0]  # noqa: B023
        delay = again["t"] - killed
        delays.append(delay)
        print(f"\nround {r}: kill -9 -> restart {delay:.3f}s, on pid {again['pid']}")
        assert again["pid"] == idle.pid
        assert delay < 1.5
        marker.write_text("go")
        wait_for(lambda: all_finished(q), timeout=30)  # noqa: B023
        seq1 = (q.record(j1.id) or {}).get("claim_seq")
        seqs = [(q.record(j.id) or {}).get("claim_seq") for j in behind]
        print(f"claim_seq: J1 {seq1}, behind {seqs}")
        assert isinstance(seq1, int) and all(isinstance(s, int) for s in seqs)
        assert seq1 < min(seqs)  # type: ignore[type-var]
        assert seqs == sorted(seqs)  # type: ignore[type-var]
        os.kill(idle.pid, signal.SIGTERM)
        assert idle.wait(30) == 0
    print(f"kill -> restart: p50 {statistics.median(delays):.3f}s, max {max(delays):.3f}s")
