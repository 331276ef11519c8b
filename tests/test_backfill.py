"""Backfills: one job per interval, oldest first, each pushed once: a second run of the same
range pushes nothing, an overlapping one just the new intervals, a dry run nothing at all."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Processes, wait_for
from fifoflow import Queue, UsageError
from fifoflow.backfill import backfill, intervals
from fifoflow.keys import Key, queue_key

CLI = Callable[..., subprocess.CompletedProcess[str]]
T = "fftest_targets:echo"
OCTOBER = ["--start", "2026-10-01", "--end", "2026-10-31", "--every", "1d", "--param", "date"]


def test_intervals() -> None:
    assert intervals("2026-10-01", "2026-10-03", "1d") == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert intervals("2026-10-01", "2026-10-10", "1w") == ["2026-10-01", "2026-10-08"]
    assert intervals("2026-10-01", "2026-10-01", "1d") == ["2026-10-01"]
    assert intervals("2026-10-01T22:00", "2026-10-02", "1h", "Europe/Paris") == [
        "2026-10-01T22:00:00+02:00",
        "2026-10-01T23:00:00+02:00",
        "2026-10-02T00:00:00+02:00",
    ]
    # Across the end of daylight saving time: fixed steps of real time.
    assert intervals("2026-10-25T01:30", "2026-10-25T03:00", "30m", "Europe/Paris") == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    for start, end, every in (
        ("2026-10-31", "2026-10-01", "1d"),
        ("2026-13-01", "2026-10-01", "1d"),
        ("yesterday", "2026-10-01", "1d"),
        ("2026-10-01", "2026-10-31", "1 day"),
        ("2020-01-01", "2026-01-01", "1s"),  # too many intervals
    ):
        with pytest.raises(UsageError):
            intervals(start, end, every)


def test_backfill_twice_pushes_31_then_0(vqueue: Queue, cli: CLI, tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    base.write_text('{"region": "eu"}')
    first = cli("backfill", T, *OCTOBER, "--params", str(base), "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["intervals"], doc["pushed"], doc["skipped"]) == (31, 31, 0)
    second = cli("backfill", T, *OCTOBER, "--params", str(base), "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert (again["intervals"], again["pushed"], again["skipped"]) == (31, 0, 31)
    # The jobs still queued are named in the second run; nothing new was added.
    assert [j["id"] for j in again["jobs"]] == [j["id"] for j in doc["jobs"]]
    records = vqueue.jobs()
    assert len(records) == 31
    # Oldest first: push order (the ids) is date order.
    dates = [f"2026-10-{d:02d}" for d in range(1, 32)]
    assert [r["params"] for r in records] == [{"region": "eu", "date": d} for d in dates]
    assert records[0]["key"] == f"backfill:{T}:date=2026-10-01"
    text = cli("backfill", T, *OCTOBER, "--params", str(base))
    assert text.returncode == 0
    assert text.stdout.strip() == (
        f"pushed 0 job(s) to queue {vqueue.name} (31 of 31 interval(s) pushed before)"
    )
    print(f"\nbackfill of October twice: pushed {doc['pushed']}, then {again['pushed']}")


def test_idempotent_after_the_jobs_ran_and_overlapping_ranges_push_the_rest(
    vqueue: Queue, cli: CLI, procs: Processes
) -> None:
    r = cli("backfill", T, "--start", "2026-10-01", "--end", "2026-10-15", "--every", "1d",
            "--param", "date")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pushed 15 job(s) to queue {vqueue.name}: 2026-10-01 .. 2026-10-15")
    w = procs.worker("fftest_targets", "--burst", "--log-level", "WARNING")
    assert w.wait(60) == 0
    assert vqueue.stats()["succeeded"] == 15
    # The jobs are done (their keys released): the once-records still say they were pushed.
    dry = json.loads(cli("backfill", T, *OCTOBER, "--dry-run", "--json").stdout)
    assert (dry["dry_run"], dry["pushed"], dry["skipped"]) == (True, 16, 15)
    assert [j["value"] for j in dry["jobs"] if j["new"]] == [f"2026-10-{d}" for d in range(16, 32)]
    assert len(vqueue.job_ids()) == 15  # a dry run pushes nothing
    doc = json.loads(cli("backfill", T, *OCTOBER, "--json").stdout)
    assert (doc["pushed"], doc["skipped"]) == (16, 15)
    assert [j["value"] for j in doc["jobs"] if j["new"]] == [
        f"2026-10-{d:02d}" for d in range(16, 32)
    ]
    assert len(vqueue.job_ids()) == 31


def test_python_api(vqueue: Queue) -> None:
    b = backfill(vqueue, T, "2026-10-01T00:00", "2026-10-01T02:00", "1h", "hour", {"k": 1})
    assert (b.pushed, b.skipped) == (3, 0)
    assert [i.value for i in b.intervals] == [
        "2026-10-01T00:00:00+00:00",
        "2026-10-01T01:00:00+00:00",
        "2026-10-01T02:00:00+00:00",
    ]
    assert vqueue.job(b.intervals[0].id or "").params == {"k": 1, "hour": b.intervals[0].value}
    again = backfill(vqueue, T, "2026-10-01T00:00", "2026-10-01T03:00", "1h", "hour", {"k": 1})
    assert (again.pushed, again.skipped) == (1, 3)
    dry = backfill(vqueue, T, "2026-10-01T00:00", "2026-10-01T04:00", "1h", "hour", dry_run=True)
    assert (dry.pushed, dry.skipped) == (1, 4) and len(vqueue.job_ids()) == 4


def test_once_records_are_forgotten_after_their_ttl(
    vqueue: Queue, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIFOFLOW_ONCE_TTL_SECONDS", "1")
    q = Queue(vqueue.name, url=url)
    once = queue_key(q.name, Key.ONCE)
    backfill(q, T, "2026-10-01", "2026-10-02", "1d", "date")
    pushed_at = q.broker.server_time()
    assert q.client.zcard(once) == 2
    wait_for(lambda: q.broker.server_time() > pushed_at + 1.5, timeout=10)
    backfill(q, T, "2026-11-01", "2026-11-01", "1d", "date")  # trims as it pushes
    assert q.client.zrange(once, 0, -1) == [f"backfill:{T}:date=2026-11-01"]
    q.close()


def test_bad_input_exits_2_with_one_line_and_pushes_nothing(vqueue: Queue, cli: CLI) -> None:
    for args in (
        ["--start", "2026-10-31", "--end", "2026-10-01", "--every", "1d", "--param", "d"],
        ["--start", "2026-10-01", "--end", "someday", "--every", "1d", "--param", "d"],
        ["--start", "2026-10-01", "--end", "2026-10-31", "--every", "daily", "--param", "d"],
        ["--start", "2026-10-01", "--end", "2026-10-31", "--every", "1d"],
        ["--start", "2026-10-01", "--end", "2026-10-31", "--every", "1d", "--param", "a b"],
        [*OCTOBER, "--params", "{nope"],
        [*OCTOBER, "--params", "/no/such/file.json"],
        [*OCTOBER, "--params", '{"date": 1}'],
        [*OCTOBER, "--timezone", "Nowhere/Land"],
    ):
        r = cli("backfill", T, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
    r = cli("backfill", "no-target", *OCTOBER)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert vqueue.job_ids() == []
