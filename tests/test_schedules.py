"""Schedules: the model (ticks, durations, timezones, the catch-up plan), the one script
that fires a tick (compare-and-set of the watermark), and real `fifoflow worker
--scheduler` processes firing each tick exactly once however many of them run."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, wait_for
from fifoflow import Queue, UsageError
from fifoflow.records import PushSpec
from fifoflow.schedules import Spec, parse_duration, plan

CLI = Callable[..., subprocess.CompletedProcess[str]]


# -- the model ----------------------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1d") == 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("45s") == parse_duration("45") == 45
    for bad in ("", "0s", "1x", "m", "1.5h", "-1m", "30m1h", "1 h"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_spec_takes_a_zero_grace() -> None:
    assert Spec.create("m:f", every="1m", grace="0s").grace == 0
    assert Spec.create("m:f", every="1m", grace=0).grace == 0


def test_spec_refuses_bad_input() -> None:
    t = "fftest_targets:echo"
    for kwargs in (
        {},
        {"cron": "* * * * *", "every": "1m"},
        {"cron": "61 * * * *"},
        {"cron": "0 0 30 2 *"},  # February 30th: never fires
        {"cron": "* * *"},
        {"every": "1m", "timezone": "Mars/Olympus_Mons"},
        {"every": "1m", "catchup": "sometimes"},
        {"every": "1m", "param": "not an identifier"},
        {"every": "1m", "param": "day", "params": {"day": 1}},
    ):
        with pytest.raises(UsageError):
            Spec.create(t, **kwargs)  # type: ignore[arg-type]


def test_cron_ticks_follow_the_timezone_across_daylight_saving() -> None:
    spec = Spec.create("m:f", cron="0 2 * * *", timezone="Europe/Paris", param="at")
    start = datetime.fromisoformat("2026-03-27T12:00:00+01:00").timestamp()
    ticks = list(spec.ticks(start, start + 4 * 86400, 10))
    local = [spec.params_for(t)["at"] for t in ticks]
    # 2:00 does not exist on 29 March (clocks jump to 3:00): that day's tick is at 3:00.
    assert local == [
        "2026-03-28T02:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-31T02:00:00+02:00",
    ]
    assert spec.latest(ticks[2]) == ticks[2] and spec.latest(ticks[2] - 1) == ticks[1]
    assert spec.next_tick(ticks[1]) == ticks[2]


def test_every_ticks_are_aligned_to_the_epoch() -> None:
    spec = Spec.create("m:f", every="10m")
    assert list(spec.ticks(1000, 2500, 10)) == [1200, 1800, 2400]
    assert spec.latest(1799) == 1200 and spec.next_tick(1800) == 2400
    assert spec.count(1000, 2400) == 3


@pytest.mark.parametrize(
    ("catchup", "fire", "skipped"),
    [
        ("all", list(range(101, 111)), 0),
        ("last", [107, 108, 109, 110], 6),
        ("none", [108, 109, 110], 7),
    ],
)
def test_plan_fires_on_time_ticks_and_applies_the_catchup_to_missed_ones(
    catchup: str, fire: list[int], skipped: int
) -> None:
    # Watermark 100, now 110.5, grace 3 s: ticks 101..107 are older than the grace
    # (missed), 108..110 on time.
    spec = Spec.create("m:f", every="1s", grace="3s", catchup=catchup)
    p = plan(spec, 100, 110.5)
    assert p is not None
    assert (p.fire, p.watermark, p.skipped, p.missed) == (fire, 110, skipped, 7)
    assert plan(spec, 110, 110.9) is None


def test_plan_with_only_missed_ticks_and_long_catch_ups() -> None:
    none = Spec.create("m:f", every="1m", grace="3s", catchup="none")
    p = plan(none, 0, 1000)  # ticks 60..960, all missed
    assert p is not None and (p.fire, p.watermark, p.skipped) == ([], 960, 16)
    every = Spec.create("m:f", every="1s", catchup="all")
    p = plan(every, 0, 1200)
    assert p is not None and p.fire == list(range(1, 501)) and p.more
    p = plan(every, 500, 1200, limit=1000)
    assert p is not None and p.fire == list(range(501, 1201)) and not p.more


# -- the script: a tick fires once -----------------------------------------------------------


def test_racing_schedulers_fire_a_tick_once(vqueue: Queue) -> None:
    s = vqueue.schedules.add("race", "fftest_targets:echo", every="1h")
    tick = s.spec.next_tick(s.last)
    push = PushSpec("fftest_targets:echo")
    outcomes: list[str] = []

    def fire() -> None:
        job = [(json.dumps({"n": 1}), f"schedule:race:{tick}")]
        r = vqueue.broker.fire(
            vqueue.name, "race", push, job, expected=s.last, watermark=tick, skipped=0,
            last_fired=tick,
        )  # fmt: skip
        outcomes.append(r.outcome)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["stale"] * 7
    assert len(vqueue.job_ids()) == 1
    after = vqueue.schedules.get("race")
    assert (after.last, after.fired, after.last_fired) == (tick, 1, tick)
    assert after.last_id == vqueue.job_ids()[0]

    vqueue.schedules.pause("race")
    args = dict(expected=tick, watermark=tick + 3600, skipped=0, last_fired=None)
    assert vqueue.broker.fire(vqueue.name, "race", push, [], **args).outcome == "paused"  # type: ignore[arg-type]
    vqueue.schedules.remove("race")
    assert vqueue.broker.fire(vqueue.name, "race", push, [], **args).outcome == "gone"  # type: ignore[arg-type]
    assert len(vqueue.job_ids()) == 1


# -- real schedulers -----------------------------------------------------------------------

GRACE = 6


def tick_jobs(q: Queue, name: str) -> dict[int, list[dict[str, Any]]]:
    """The schedule's jobs by tick (Unix seconds), from the tick each one carries."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in q.jobs():
        if (r["key"] or "").startswith(f"schedule:{name}:"):
            t = round(datetime.fromisoformat(r["params"]["tick"]).timestamp())
            out.setdefault(t, []).append(r)
    return out


def fired_by(logs: list[Path]) -> dict[str, int]:
    """Ticks each scheduler fired, from its log ('fired N tick(s)')."""
    pattern = re.compile(r"fired (\d+) tick\(s\)")
    return {log.stem: sum(int(n) for n in pattern.findall(log.read_text())) for log in logs}


def start_schedulers(procs: Processes, tmp: Path, names: list[str]) -> list[Any]:
    """``fifoflow worker --scheduler`` processes, each logging to ``tmp/NAME.log``."""
    workers = []
    for name in names:
        args = ["--scheduler", "--name", name, "--log-level", "DEBUG"]
        with (tmp / f"{name}.log").open("w") as log:  # the child keeps its own copy
            workers.append(procs.worker("fftest_targets", *args, stderr=log))
    return workers


def stop(workers: list[Any]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(60) == 0


@pytest.mark.timeout(300)
def test_three_schedulers_fire_each_of_20_ticks_once_then_catch_up_last(
    vqueue: Queue, procs: Processes, cli: CLI, tmp_path: Path
) -> None:
    names = ["s1", "s2", "s3"]
    workers = start_schedulers(procs, tmp_path, names)
    live = lambda: {w["name"] for w in vqueue.broker.live_workers()}  # noqa: E731
    wait_for(lambda: set(names) <= live(), timeout=60)
    r = cli(
        "schedule", "add", "ticker", "fftest_targets:echo", "--every", "1s", "--param", "tick",
        "--catchup", "last", "--grace", f"{GRACE}s", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)["created_at"]

    wait_for(lambda: len(tick_jobs(vqueue, "ticker")) >= 20, timeout=90)
    stop(workers)
    jobs = tick_jobs(vqueue, "ticker")
    ticks = sorted(jobs)
    first = math.floor(created) + 1
    # The first 20 ticks after the schedule was added: exactly one job each.
    assert [len(jobs.get(t, [])) for t in range(first, first + 20)] == [1] * 20
    # And every tick until the schedulers stopped: none missed, none doubled.
    assert ticks == list(range(first, ticks[-1] + 1))
    assert all(len(v) == 1 for v in jobs.values())
    by = fired_by([tmp_path / f"{n}.log" for n in names])
    assert sum(by.values()) == len(ticks), by
    s = vqueue.schedules.get("ticker")
    assert (s.fired, s.skipped, s.last, s.last_fired) == (len(ticks), 0, ticks[-1], ticks[-1])
    print(f"\n3 schedulers: {len(ticks)} ticks, {len(ticks)} jobs, 0 missed, 0 doubled; by {by}")

    # Nothing runs while GRACE + 5 more ticks pass: they are missed. A restart with
    # --catchup last fires the newest missed tick only, then the on-time ones.
    last = ticks[-1]
    wait_for(lambda: vqueue.broker.server_time() > last + GRACE + 5, timeout=30)
    workers = start_schedulers(procs, tmp_path, [f"{n}b" for n in names])
    wait_for(lambda: len([t for t in tick_jobs(vqueue, "ticker") if t > last]) >= 3, timeout=60)
    wait_for(lambda: {f"{n}b" for n in names} <= live(), timeout=60)  # all up: they stop cleanly
    stop(workers)
    jobs = tick_jobs(vqueue, "ticker")
    new = sorted(t for t in jobs if t > last)
    m = new[0]
    assert m >= last + 5
    assert new == list(range(m, new[-1] + 1)) and all(len(v) == 1 for v in jobs.values())
    first_fired = jobs[m][0]["created_at"]
    assert first_fired - m > GRACE  # m was missed: older than the grace when it fired
    assert jobs[m + 1][0]["created_at"] - (m + 1) <= GRACE + 1  # m + 1 was on time
    s = vqueue.schedules.get("ticker")
    assert s.skipped == m - last - 1
    assert s.fired == len(jobs)
    logs = "".join((tmp_path / f"{n}b.log").read_text() for n in names)
    (line,) = [x for x in logs.splitlines() if "catch-up last: fired" in x]
    print(line)
    print(
        f"restart with --catchup last: ticks {last + 1}..{m - 1} skipped ({m - last - 1}), "
        f"{m} fired {first_fired - m:.1f}s late as the catch-up, then {len(new) - 1} on time"
    )


def test_missed_ticks_with_catchup_none_and_all(
    vqueue: Queue, procs: Processes, tmp_path: Path
) -> None:
    for policy in ("none", "all"):
        vqueue.schedules.add(
            policy, "fftest_targets:echo", every="1s", grace="2s", catchup=policy, param="tick"
        )
    created = vqueue.schedules.get("all").last
    # No scheduler runs while 6 ticks pass: those older than 2 s when one starts are missed.
    wait_for(lambda: vqueue.broker.server_time() > created + 8, timeout=30)
    (w,) = start_schedulers(procs, tmp_path, ["solo"])
    wait_for(lambda: len(tick_jobs(vqueue, "none")) >= 2, timeout=60)
    stop([w])

    every = tick_jobs(vqueue, "all")
    ticks = sorted(every)
    assert ticks == list(range(created + 1, ticks[-1] + 1))  # all: nothing lost
    assert all(len(v) == 1 for v in every.values())
    assert vqueue.schedules.get("all").skipped == 0

    none = tick_jobs(vqueue, "none")
    assert all(len(v) == 1 for v in none.values())
    # none: no missed tick fired; each fired tick was on time.
    assert all(v[0]["created_at"] - t <= 2 + 2 for t, v in none.items())
    assert min(none) >= created + 6
    s = vqueue.schedules.get("none")
    assert s.skipped >= 5 and s.fired == len(none)


def test_pause_and_resume(vqueue: Queue, procs: Processes, tmp_path: Path, cli: CLI) -> None:
    vqueue.schedules.add("p", "fftest_targets:echo", every="1s", param="tick")
    (w,) = start_schedulers(procs, tmp_path, ["solo"])
    wait_for(lambda: len(tick_jobs(vqueue, "p")) >= 2, timeout=60)
    assert cli("schedule", "pause", "p").returncode == 0
    paused_at = vqueue.broker.server_time()
    n = len(tick_jobs(vqueue, "p"))
    wait_for(lambda: vqueue.broker.server_time() > paused_at + 3, timeout=30)
    assert len(tick_jobs(vqueue, "p")) == n  # nothing fired while paused
    r = cli("schedule", "resume", "p", "--json")
    assert r.returncode == 0, r.stderr
    resumed = datetime.fromisoformat(json.loads(r.stdout)["watermark"]).timestamp()
    wait_for(lambda: len(tick_jobs(vqueue, "p")) > n, timeout=30)
    stop([w])
    ticks = sorted(tick_jobs(vqueue, "p"))
    # Ticks due while it was paused never fire (the watermark moved to the resume).
    assert not [t for t in ticks if paused_at + 1 < t <= resumed]
    assert len(ticks) == len(set(ticks))


def test_schedule_commands(vqueue: Queue, cli: CLI) -> None:
    r = cli(
        "schedule", "add", "nightly", "fftest_targets:echo", "--cron", "0 2 * * *",
        "--timezone", "Europe/Paris", "--params", '{"region": "eu"}', "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "nightly" and doc["cron"] == "0 2 * * *" and doc["catchup"] == "last"
    assert doc["params"] == {"region": "eu"} and doc["timezone"] == "Europe/Paris"
    assert doc["next"].endswith(("00:00:00Z", "01:00:00Z"))  # 2:00 in Paris, in UTC
    r = cli("schedule", "add", "often", "fftest_targets:echo", "--every", "10m")
    assert r.returncode == 0 and "every 10m, next tick" in r.stdout
    listed = json.loads(cli("schedule", "list", "-q", vqueue.name, "--json").stdout)["schedules"]
    assert [s["name"] for s in listed] == ["nightly", "often"]
    everywhere = json.loads(cli("schedule", "list", "--json").stdout)["schedules"]
    assert {(s["queue"], s["name"]) for s in listed} <= {
        (s["queue"], s["name"]) for s in everywhere
    }
    r = cli("schedule", "pause", "often", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["paused"] is True
    assert "paused" in cli("schedule", "list", "-q", vqueue.name).stdout
    r = cli("schedule", "resume", "often", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["paused"] is False
    r = cli("schedule", "remove", "often", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"queue": vqueue.name, "removed": "often"}
    listed = json.loads(cli("schedule", "list", "-q", vqueue.name, "--json").stdout)["schedules"]
    assert [s["name"] for s in listed] == ["nightly"]


def test_bad_input_exits_2_with_one_line_and_changes_nothing(vqueue: Queue, cli: CLI) -> None:
    t = "fftest_targets:echo"
    assert cli("schedule", "add", "keep", t, "--every", "1h").returncode == 0
    before = json.loads(cli("schedule", "list", "-q", vqueue.name, "--json").stdout)
    for args in (
        ["add", "x", t, "--cron", "61 * * * *"],
        ["add", "x", t, "--cron", "0 0 30 2 *"],
        ["add", "x", t, "--every", "10x"],
        ["add", "x", t, "--every", "0s"],
        ["add", "x", t, "--every", "1m", "--timezone", "Mars/Olympus_Mons"],
        ["add", "x", t, "--every", "1m", "--cron", "* * * * *"],
        ["add", "x", t],
        ["add", "x", t, "--every", "1m", "--catchup", "sometimes"],
        ["add", "x", t, "--every", "1m", "--grace", "soon"],
        ["add", "x", "not-a-target", "--every", "1m"],
        ["add", "x", t, "--every", "1m", "--params", "{oops"],
        ["add", "x", t, "--every", "1m", "--params", "[1, 2]"],
        ["add", "bad name", t, "--every", "1m"],
        ["add", "keep", t, "--every", "5m"],  # the name is taken
        ["pause", "nope"],
        ["resume", "nope"],
        ["remove", "nope"],
    ):
        r = cli("schedule", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "Traceback" not in r.stderr
    after = json.loads(cli("schedule", "list", "-q", vqueue.name, "--json").stdout)
    for doc in (before, after):
        for s in doc["schedules"]:
            s.pop("next")
    assert after == before
    assert Counter(s["name"] for s in after["schedules"]) == {"keep": 1}
