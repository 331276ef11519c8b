"""Alerts: ``alerts.evaluate`` over real snapshots, ``fifoflow monitor`` (once and as a
loop) as a user runs it, an unhealthy worker made so by a real server fault, and the
shipped Prometheus rules checked and unit-tested by promtool."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT, EmbeddedServer, Processes, wait_for
from faultkit import PrivateRedis, busy_window, free_port
from fifoflow import Queue, metrics
from fifoflow.alerts import Alert, Kind, Thresholds, Tracker, evaluate, prefect_event
from promkit import Samples
from qops import claim, complete

Cli = Callable[..., subprocess.CompletedProcess[str]]
RULES = ROOT / "deploy" / "prometheus"


def make_dead(q: Queue, n: int, pool: str = "x") -> None:
    """``n`` dead jobs in ``pool``: claimed by hand and reported dead."""
    q.push_many("fftest_targets:add", [{"x": i} for i in range(n)], pool=pool, retries=0)
    _, jobs = claim(q, "hand", n, [pool], lease=30)
    for job in jobs:
        assert complete(q, job, "dead", "ValueError: no").outcome == "dead"


def setup_queue(q: Queue) -> None:
    """3 jobs queued in pool default (which no worker serves), 2 dead ones in pool x."""
    q.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    make_dead(q, 2)


def no_worker_line(q: str, n: int = 3) -> str:
    return (
        f"no_worker: queue {q} pool default: {n} job(s) queued and no live worker serves the pool"
    )


def test_evaluate_a_real_snapshot_and_track_alerts(vqueue: Queue) -> None:
    q, broker = vqueue.name, vqueue.broker
    setup_queue(vqueue)
    t = Thresholds(max_queued=2, max_dead=1, max_age=0.2)

    def alerts() -> list[Alert]:
        return evaluate(metrics.snapshot(broker, [q]), t, [q])

    # The oldest queued job passes 0.2 s of waiting: then all four queue alerts show.
    found = wait_for(lambda: [a for a in alerts() if a.kind == Kind.AGE] and alerts())
    assert [a.kind for a in found] == ["queued", "dead", "age", "no_worker"]
    lines = [a.line() for a in found]
    assert lines[0] == f"queued: queue {q}: 3 jobs queued (threshold 2)"
    assert lines[1] == f"dead: queue {q}: 2 dead jobs (threshold 1)"
    assert re.fullmatch(
        rf"age: queue {q}: oldest queued job waiting \d+s \(threshold 0\.2s\)", lines[2]
    )
    assert lines[3] == no_worker_line(q)
    assert found[3].pool == "default" and found[3].value == 3 and found[0].threshold == 2
    # 0 turns a threshold off; a pool with jobs and no worker is always an alert.
    off = evaluate(metrics.snapshot(broker, [q]), Thresholds(0, 0, 0), [q])
    assert [a.kind for a in off] == ["no_worker"]
    # Exactly at a threshold is not above it.
    assert not [
        a
        for a in evaluate(metrics.snapshot(broker, [q]), Thresholds(3, 2, 0), [q])
        if a.kind != "no_worker"
    ]

    tracker = Tracker()
    started, resolved = tracker.update(found)
    assert (len(started), resolved) == (4, [])
    assert tracker.update(alerts()) == ([], [])  # still active: nothing new (the age grew)
    vqueue.purge_dead()
    vqueue.cancel(vqueue.job_ids("queued")[0])
    started, resolved = tracker.update(alerts())
    assert started == [] and sorted(a.kind for a in resolved) == ["dead", "queued"]

    event = prefect_event(found[3])
    assert event["event"] == "fifoflow.alert.no_worker"
    assert event["resource"] == {
        "prefect.resource.id": f"fifoflow.queue.{q}",
        "prefect.resource.name": q,
        "fifoflow.pool": "default",
    }
    assert event["payload"]["message"] == found[3].message
    assert prefect_event(found[0], resolved=True)["event"] == "fifoflow.resolved.queued"


def test_monitor_once_prints_one_line_per_alert_and_exits_1(vqueue: Queue, cli: Cli) -> None:
    q = vqueue.name
    setup_queue(vqueue)
    thresholds = ("--max-queued", "2", "--max-dead", "1", "--max-age", "0")
    r = cli("monitor", "--once", "--queue", q, *thresholds)
    assert (r.returncode, r.stderr) == (1, "")
    assert r.stdout.splitlines() == [
        f"queued: queue {q}: 3 jobs queued (threshold 2)",
        f"dead: queue {q}: 2 dead jobs (threshold 1)",
        no_worker_line(q),
    ]
    r = cli("monitor", "--once", "--queue", q, *thresholds, "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert [(a["kind"], a["queue"], a["value"]) for a in doc["alerts"]] == [
        ("queued", q, 3),
        ("dead", q, 2),
        ("no_worker", q, 3),
    ]
    # Thresholds from the environment; an empty one is off. Flags win over it.
    env = {"FIFOFLOW_ALERT_MAX_QUEUED": "3", "FIFOFLOW_ALERT_MAX_DEAD": ""}
    r = cli("monitor", "--once", "--queue", q, env=env)
    assert (r.returncode, r.stdout.splitlines()) == (1, [no_worker_line(q)])
    r = cli("monitor", "--once", "--queue", q, "--max-dead", "1", env=env)
    assert r.stdout.splitlines()[0] == f"dead: queue {q}: 2 dead jobs (threshold 1)"
    # Nothing crossed: silent, exit 0 (cron mails nothing).
    r = cli("monitor", "--once", "--queue", f"{q}-empty")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = cli("monitor", "--once", "--queue", f"{q}-empty", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"ok": True, "alerts": []})


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--once", "--interval", "0"], {}, 2, "error: --interval must be > 0"),
        (["--once", "--max-dead", "-1"], {}, 2, "error: Invalid value for '--max-dead'"),
        (["--once", "--queue", "no{braces}"], {}, 2, "error: "),
        (["--once"], {"FIFOFLOW_ALERT_MAX_AGE": "soon"}, 2, "error: FIFOFLOW_ALERT_MAX_AGE: "),
        # The contract: a server that cannot be reached is an operation that failed (exit 1).
        (
            ["--once"],
            {"FIFOFLOW_URL": "redis://127.0.0.1:{port}"},
            1,
            "error: cannot reach the server at redis://127.0.0.1:",
        ),
    ],
)
def test_monitor_bad_usage_exits_2_and_an_unreachable_server_1_in_one_line(
    vqueue: Queue, cli: Cli, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    env = {k: v.format(port=free_port()) for k, v in env.items()}
    r = cli("monitor", *args, env=env)
    assert r.returncode == code, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(message), r.stderr
    assert r.stdout == ""


def test_monitor_loop_fires_once_and_resolves_when_a_worker_comes(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    q = vqueue.name
    vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    out, err = tmp_path / "monitor.out", tmp_path / "monitor.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        mon = procs.start(
            *(sys.executable, "-m", "fifoflow", "monitor", "--interval", "0.2", "--queue", q),
            *("--max-queued", "2", "--max-dead", "0", "--max-age", "0"),
            stdout=fo,
            stderr=fe,
        )

    def lines() -> list[str]:
        assert mon.poll() is None, err.read_text()
        return out.read_text().splitlines()

    def has(*wanted: str) -> bool:
        return all(any(line.endswith(w) for line in lines()) for w in wanted)

    firing = (
        f"firing queued: queue {q}: 3 jobs queued (threshold 2)",
        f"firing {no_worker_line(q)}",
    )
    wait_for(lambda: has(*firing), timeout=30)
    assert err.read_text() == (
        f"fifoflow monitor: {q} every 0.2s; alerts: queued > 2, dead off, age off, "
        "no_worker, unhealthy\n"
    )
    worker = procs.worker("fftest_targets", "--burst")
    assert worker.wait(60) == 0
    resolved = (f"resolved queued: queue {q}", f"resolved no_worker: queue {q} pool default")
    wait_for(lambda: has(*resolved), timeout=30)
    mon.send_signal(signal.SIGTERM)
    assert mon.wait(10) == 0
    got = out.read_text().splitlines()
    assert len(got) == 4, got  # one line per start and per resolution, none repeated
    for line in got:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (firing|resolved) ", line), line


@pytest.mark.timeout(90)
def test_monitor_loop_alerts_while_the_server_is_down(
    qname: str, procs: Processes, tmp_path: Path
) -> None:
    """The loop through a SIGKILL of the server and its restart, in JSON Lines."""
    srv = EmbeddedServer(appendfsync="always")  # of this test alone: it is killed
    try:
        q = Queue(qname, url=srv.url)
        q.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
        out = tmp_path / "monitor.out"
        with open(out, "w") as fo:
            mon = procs.start(
                *(sys.executable, "-m", "fifoflow", "monitor", "--interval", "0.2", "--json"),
                *("--queue", qname, "--max-queued", "2", "--max-dead", "0", "--max-age", "0"),
                env={"FIFOFLOW_URL": srv.url},
                stdout=fo,
            )

        def printed() -> list[tuple[str, str]]:
            assert mon.poll() is None
            docs = [json.loads(line) for line in out.read_text().splitlines()]
            return [(d["state"], d["kind"]) for d in docs]

        wait_for(lambda: ("firing", "queued") in printed(), timeout=30)
        srv.kill()
        wait_for(lambda: ("firing", "server") in printed(), timeout=30)
        srv.restart()
        wait_for(lambda: ("resolved", "server") in printed(), timeout=30)
        mon.send_signal(signal.SIGTERM)
        assert mon.wait(10) == 0
        docs = [json.loads(line) for line in out.read_text().splitlines()]
        # The queue's alerts stayed active through the outage: never resolved, never again.
        assert [(d["state"], d["kind"]) for d in docs] == [
            ("firing", "queued"),
            ("firing", "no_worker"),
            ("firing", "server"),
            ("resolved", "server"),
        ]
        assert docs[0]["message"] == f"queue {qname}: 3 jobs queued (threshold 2)"
        assert docs[2]["message"].startswith("cannot read the server: ")
        assert docs[2]["subject"] == "server" and docs[3]["time"] >= docs[2]["time"]
        q.close()
    finally:
        srv.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")
@pytest.mark.timeout(90)
def test_a_worker_that_met_a_server_error_is_an_unhealthy_alert(
    qname: str, procs: Processes, tmp_path: Path, cli: Cli
) -> None:
    srv = PrivateRedis()
    try:
        env = {"FIFOFLOW_URL": srv.url, "FIFOFLOW_QUEUE": qname}
        q = Queue(qname, url=srv.url)
        name = f"sick-{qname}"
        log = tmp_path / "worker.log"
        with open(log, "w") as fh:
            procs.worker(
                "fftest_targets", "--lease", "3", "--name", name, env=env, stdout=fh, stderr=fh
            )
        wait_for(lambda: any(w["name"] == name for w in q.broker.live_workers()), timeout=30)
        r = cli("monitor", "--once", "--queue", qname, env=env)
        assert (r.returncode, r.stdout) == (0, ""), r.stderr  # healthy, nothing queued

        admin = srv.client()
        # Every command gets BUSY for 1.5 s: a heartbeat (every lease/3 = 1 s) included. The
        # registration (TTL 3 s) outlives the window.
        busy_window(admin, 1.5)

        def unhealthy() -> str | None:
            r = cli("monitor", "--once", "--queue", qname, env=env)
            return r.stdout if r.returncode == 1 else None

        stdout = wait_for(unhealthy, timeout=30, interval=0.2)
        prefix = f"unhealthy: worker {name} on {socket.gethostname()}: unhealthy (server error "
        assert stdout.startswith(prefix) and "BUSY" in stdout, stdout
        assert len(stdout.splitlines()) == 1
        healthy = Samples(metrics.render(q.broker).decode()).by("fifoflow_worker_healthy", "worker")
        assert healthy[name] == 0
        q.close()
        admin.close()
    finally:
        srv.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian: prometheus)")
def test_prometheus_rules_pass_promtool_check_and_unit_tests(vqueue: Queue) -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", "fifoflow-rules.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout
    test = subprocess.run(
        ["promtool", "test", "rules", "fifoflow-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout
    # The rules state the monitor's five kinds, over metrics that /metrics really serves.
    text = (RULES / "fifoflow-rules.yml").read_text()
    kinds = sorted(k.value for k in Kind if k != Kind.SERVER)
    assert sorted(re.findall(r"kind: (\w+)", text)) == kinds
    vqueue.push("fftest_targets:add", {"x": 1})
    served = Samples(metrics.render(vqueue.broker).decode())
    for name in set(re.findall(r"\b(fifoflow_[a-z_]+)\b", text)):
        assert name in served.types, name
    # A pool nobody serves has 0 slots (and its queued jobs): what FifoflowNoWorker reads.
    assert served.value("fifoflow_pool_slots", queue=vqueue.name, pool="default") == 0
    assert served.value("fifoflow_pool_queued_jobs", queue=vqueue.name, pool="default") == 1
