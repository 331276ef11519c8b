"""``POST /api/jobs``: jobs from any language over HTTP, on a real dashboard (uvicorn on a
free loopback port) over a real server. Each answer (201, 400, 401, 403, 413, 429), and a
request without the token (or with a wrong one) changes nothing at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Processes, wait_for
from dashkit import Dash, Response, dashboard, request
from fifoflow import Queue

TOKEN = "t0ken-for-tests-0123456789"
T = "fftest_targets:add"


@pytest.fixture
def dash(vqueue: Queue, url: str) -> Iterator[Dash]:
    with dashboard(url, allow_push=True, token=TOKEN, sample_every=0, push_limit=4096) as d:
        yield d


def post(dash: Dash, body: Any, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": "application/json", "X-Fifoflow-Token": TOKEN, **(headers or {})}
    return request("POST", dash.url + "/api/jobs", raw, {k: v for k, v in h.items() if v})


def state(q: Queue) -> tuple[dict[str, int], list[str], list[str], dict[str, str]]:
    """Everything a push could change: counts, ids, known queues, the queue's counters
    (after a first job, so that the queue is known: a state worth keeping)."""
    if not q.job_ids():
        q.push(T, {"x": -1})
    stats = q.client.hgetall(f"ff:{{{q.name}}}:stats")
    return q.stats(), q.job_ids(), q.broker.queues(), stats


def test_201_with_the_ids_and_the_jobs_run(dash: Dash, vqueue: Queue, cli: Any) -> None:
    one = post(dash, {"target": T, "params": {"x": 1, "y": 2}, "queue": vqueue.name})
    assert one.status == 201, one.text
    doc = json.loads(one.text)
    assert doc["queue"] == vqueue.name and len(doc["ids"]) == 1
    many = post(
        dash,
        {"target": T, "params_list": [{"x": i, "y": 1} for i in range(3)], "priority": 5,
         "queue": vqueue.name, "retries": 0},
    )  # fmt: skip
    assert many.status == 201, many.text
    ids = json.loads(many.text)["ids"]
    assert [vqueue.job(i).params["x"] for i in ids] == [0, 1, 2]
    assert {vqueue.job(i).priority for i in ids} == {5}
    bearer = post(dash, {"target": T, "queue": vqueue.name}, {"X-Fifoflow-Token": "",
                  "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert bearer.status == 201, bearer.text
    w = cli("worker", "fftest_targets", "--burst")
    assert w.returncode == 0, w.stderr
    assert vqueue.job(doc["ids"][0]).result() == 3
    assert [vqueue.job(i).result() for i in ids] == [1, 2, 3]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"target": ', "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        ({"params": {}}, "target is required"),
        ({"target": "os.system"}, "invalid target"),
        ({"target": T, "params": [1]}, "JSON object"),
        ({"target": T, "params": {"x": float("nan")}}, "not JSON"),
        ({"target": T, "params_list": [{}, 7]}, "JSON object"),
        ({"target": T, "params_list": {"x": 1}}, "params_list must be a list"),
        ({"target": T, "params": {}, "params_list": [{}]}, "not both"),
        ({"target": T, "priority": "high"}, "priority"),
        ({"target": T, "retries": -1}, "retries"),
        ({"target": T, "delay": -5}, "delay"),
        ({"target": T, "queue": "a b"}, "invalid queue name"),
        ({"target": T, "pool": "pööl"}, "invalid pool name"),
        ({"target": T, "depends_on": ["0000000000000000ff"]}, "no job with id"),
        ({"target": T, "colour": "blue"}, "unknown field 'colour'"),
    ],
)
def test_400_with_one_line_and_nothing_added(
    dash: Dash, vqueue: Queue, body: Any, reason: str
) -> None:
    if isinstance(body, dict):
        body.setdefault("queue", vqueue.name)
    before = state(vqueue)
    r = post(dash, body)
    assert r.status == 400, r.text
    error = json.loads(r.text)["error"]
    assert reason in error and "\n" not in error, error
    assert state(vqueue) == before


def test_400_for_a_body_that_is_not_json(dash: Dash, vqueue: Queue) -> None:
    before = state(vqueue)
    r = post(dash, b"target=x", {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400 and "Content-Type: application/json" in r.text
    assert state(vqueue) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Fifoflow-Token": ""},
        {"X-Fifoflow-Token": "wrong"},
        {"X-Fifoflow-Token": "", "Authorization": "Bearer wrong"},
        {"X-Fifoflow-Token": "", "Authorization": f"Basic {TOKEN}"},
        {"X-Fifoflow-Token": TOKEN[:-1]},
    ],
    ids=["none", "wrong", "wrong-bearer", "not-bearer", "prefix"],
)
def test_401_without_the_token_changes_nothing(
    dash: Dash, vqueue: Queue, headers: dict[str, str]
) -> None:
    before = state(vqueue)
    for body in (
        {"target": T, "params": {"x": 1}, "queue": vqueue.name},
        {"target": T, "queue": "brand-new-queue"},  # not even a queue name is recorded
        b"not json at all",
    ):
        r = post(dash, body, headers)
        assert r.status == 401, r.text
        assert "token" in json.loads(r.text)["error"]
    assert state(vqueue) == before
    assert "brand-new-queue" not in vqueue.broker.queues()


def test_403_when_push_is_off(vqueue: Queue, url: str) -> None:
    with dashboard(url, allow_actions=True, token=TOKEN, sample_every=0) as d:
        before = state(vqueue)
        r = post(d, {"target": T, "queue": vqueue.name})
        assert r.status == 403 and "--allow-push" in r.text
        assert state(vqueue) == before


def test_413_for_a_body_over_the_limit(dash: Dash, vqueue: Queue) -> None:
    before = state(vqueue)
    r = post(dash, {"target": T, "queue": vqueue.name, "params": {"x": "a" * 5000}})
    assert r.status == 413, r.text
    assert state(vqueue) == before


def test_429_when_the_queue_is_full(dash: Dash, vqueue: Queue) -> None:
    vqueue.set_max_length(2)
    assert post(dash, {"target": T, "queue": vqueue.name}).status == 201
    before = state(vqueue)
    r = post(dash, {"target": T, "queue": vqueue.name, "params_list": [{}, {}]})
    assert r.status == 429, r.text
    assert "is full" in json.loads(r.text)["error"] and r.headers.get("retry-after") == "1"
    assert state(vqueue) == before
    vqueue.set_max_length(None)


def test_curl_example_from_the_docs(vqueue: Queue, procs: Processes, tmp_path: Any) -> None:
    """``fifoflow dashboard --allow-push --json`` and the docs' curl command, as a user runs
    them: the token from the JSON document, the ids back."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    dash = procs.start(
        sys.executable, "-m", "fifoflow", "dashboard",
        "--port", "0", "--allow-push", "--json",
    )  # fmt: skip
    assert dash.stdout is not None
    started = json.loads(dash.stdout.readline())
    assert started["push"] and not started["actions"] and started["token"]
    body = json.dumps({"target": T, "params": {"x": 2, "y": 3}, "queue": vqueue.name})
    r = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{started['url']}/api/jobs",
         "-H", f"X-Fifoflow-Token: {started['token']}", "-H", "Content-Type: application/json",
         "-d", body, "-w", "\\n%{http_code}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    answer, code = r.stdout.rsplit("\n", 1)
    assert code == "201", r.stdout + r.stderr
    (job_id,) = json.loads(answer)["ids"]
    wait_for(lambda: vqueue.record(job_id))
    assert vqueue.job(job_id).params == {"x": 2, "y": 3}
