"""``fifoflow bridge``: a raw Redis list (JSON objects LPUSHed by a plain producer) moved
into a queue in order, losing and duplicating nothing, malformed items set aside with
their reason; one script per batch, checked against the list's tail."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from conftest import Processes, wait_for
from fifoflow import Queue, QueueFull
from fifoflow.bridge import Bridge

TARGET = "fftest_targets:echo"
CLI = Callable[..., Any]


def raw_client(url: str) -> redis.Redis:
    """A plain redis-py client, as a producer in the seed's quickstart has it."""
    return redis.Redis.from_url(url)


def params_in_run_order(q: Queue) -> list[dict[str, Any]]:
    """Every job's params, by id (the rank: push order), read in pages of 1,000."""
    ids = q.job_ids()
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 1000):
        out += [r["params"] for r in q.broker.records(q.name, ids[i : i + 1000])]
    return out


def test_bridge_moves_in_order_and_sets_malformed_items_aside(
    vqueue: Queue, cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "task_queue-" + uuid.uuid4().hex[:6]
    r = raw_client(vqueue.broker.url or "")
    items: list[bytes] = [
        b'{"i": 0}',
        b"not json",
        b'{"i": 1, "nested": {"a": [1, 2, 3]}}',
        b"[1, 2]",
        b'{"x": NaN}',
        b"\xff\xfe{",
        json.dumps({"big": "a" * 200}).encode(),
        b'{"i": 2, "name": "h\xc3\xa9llo"}',
    ]
    for item in items:
        r.lpush(source, item)  # oldest at the right, as the seed's producers push
    done = cli(
        "bridge", "--from-list", source, "--target", TARGET, "--burst", "--json",
        env={"FIFOFLOW_MAX_PARAMS_BYTES": "100"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["moved"], summary["rejected"], summary["queue"]) == (3, 5, vqueue.name)
    assert r.llen(source) == 0
    moved = params_in_run_order(vqueue)
    assert moved == [{"i": 0}, {"i": 1, "nested": {"a": [1, 2, 3]}}, {"i": 2, "name": "héllo"}]
    rejected = [json.loads(e) for e in reversed(r.lrange(f"{source}:rejected", 0, -1))]
    assert [e.get("item", e.get("item_base64")) for e in rejected] == [
        "not json",
        "[1, 2]",
        '{"x": NaN}',
        base64.b64encode(b"\xff\xfe{").decode(),
        json.dumps({"big": "a" * 200}),
    ]
    reasons = [e["error"] for e in rejected]
    assert reasons[0].startswith("invalid JSON")
    assert "expected a JSON object" in reasons[1]
    assert "not JSON" in reasons[2]
    assert reasons[3] == "not UTF-8 text"
    assert "the limit is 100" in reasons[4]
    # each moved job runs like any pushed one
    w = cli("worker", "fftest_targets", "--burst")
    assert w.returncode == 0, w.stderr
    assert vqueue.stats()["succeeded"] == 3


def test_a_changed_tail_or_a_resent_batch_moves_nothing(vqueue: Queue) -> None:
    source = "raw-" + uuid.uuid4().hex[:6]
    r = raw_client(vqueue.broker.url or "")
    r.lpush(source, *[json.dumps({"i": i}) for i in range(5)])
    bridge = Bridge(vqueue, source, TARGET, batch=3)
    broker = vqueue.broker
    items = broker.list_tail(vqueue.name, source, 3)
    assert [json.loads(i) for i in items] == [{"i": 0}, {"i": 1}, {"i": 2}]
    verdicts = [(True, i.decode()) for i in items]
    r.rpop(source)  # another consumer took the oldest meanwhile
    assert broker.bridge(vqueue.name, source, bridge.spec, items, verdicts) is None
    assert (r.llen(source), len(vqueue.job_ids())) == (4, 0)  # nothing changed
    items = broker.list_tail(vqueue.name, source, 3)
    verdicts = [(True, i.decode()) for i in items]
    assert broker.bridge(vqueue.name, source, bridge.spec, items, verdicts) == (3, 0)
    # the same batch sent again (its reply lost): the tail moved on, nothing twice
    assert broker.bridge(vqueue.name, source, bridge.spec, items, verdicts) is None
    assert bridge.step() == (1, 0)
    assert bridge.step() == (0, 0)
    assert params_in_run_order(vqueue) == [{"i": i} for i in (1, 2, 3, 4)]


def test_a_full_queue_stops_the_bridge_and_loses_nothing(vqueue: Queue) -> None:
    source = "raw-" + uuid.uuid4().hex[:6]
    r = raw_client(vqueue.broker.url or "")
    r.lpush(source, *[json.dumps({"i": i}) for i in range(4)])
    vqueue.set_max_length(2)
    bridge = Bridge(vqueue, source, TARGET, batch=3)
    with pytest.raises(QueueFull):
        bridge.step()
    assert (r.llen(source), vqueue.job_ids()) == (4, [])
    vqueue.set_max_length(None)
    stop = threading.Event()
    assert bridge.run(stop, burst=True).moved == 4
    assert params_in_run_order(vqueue) == [{"i": i} for i in range(4)]


N = 10_000


def test_bridge_killed_while_a_producer_pushes_10000_loses_and_duplicates_nothing(
    vqueue: Queue, procs: Processes
) -> None:
    """A plain redis-py producer LPUSHes 10,000 items while the bridge runs; the bridge is
    SIGKILLed once mid-stream and started again: every item becomes exactly one job, in
    the producer's order."""
    source = "task_queue-" + uuid.uuid4().hex[:6]
    url = vqueue.broker.url or ""
    producer_client = raw_client(url)
    pushed = 0
    failures: list[BaseException] = []

    def produce() -> None:
        nonlocal pushed
        try:
            for start in range(0, N, 10):
                producer_client.lpush(
                    source, *[json.dumps({"i": i}) for i in range(start, start + 10)]
                )
                pushed = start + 10
                time.sleep(0.002)  # a producer with its own pace: about 3 s for all
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    def start_bridge() -> Any:
        return procs.start(
            sys.executable, "-m", "fifoflow", "bridge", "--from-list", source,
            "--target", TARGET, "--batch", "200", "--json",
        )  # fmt: skip

    first = start_bridge()
    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    moved_at_kill = wait_for(lambda: len(vqueue.job_ids()) >= 1500 and len(vqueue.job_ids()), 120)
    pushed_at_kill = pushed
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    after_kill = len(vqueue.job_ids())
    assert pushed_at_kill < N, "the producer had finished before the kill"
    second = start_bridge()
    producer.join(120)
    assert not producer.is_alive() and not failures, failures
    wait_for(lambda: producer_client.llen(source) == 0 and len(vqueue.job_ids()) == N, 120)
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    summary = json.loads(out)
    got = [p["i"] for p in params_in_run_order(vqueue)]
    lost = set(range(N)) - set(got)
    duplicated = len(got) - len(set(got))
    print(
        f"\nbridge: {N} items pushed by a plain producer; SIGKILL with >= {moved_at_kill} moved "
        f"({pushed_at_kill} pushed then), {after_kill} moved by the first bridge in all; the "
        f"second moved {summary['moved']}; "
        f"lost {len(lost)}, duplicated {duplicated}, in order: {got == sorted(got)}"
    )
    assert not lost and not duplicated
    assert got == list(range(N))  # FIFO: the producer's order is the queue's order
    assert producer_client.llen(f"{source}:rejected") == 0
    assert after_kill + summary["moved"] == N  # each item moved by exactly one of them
