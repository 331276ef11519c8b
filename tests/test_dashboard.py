"""The dashboard's data, for real: uvicorn on a free loopback port over a real server; its
JSON API, pages, server-sent events, actions and their guards, /metrics, and the cost of
its reads (counted by the server itself with INFO commandstats)."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import ROOT, EmbeddedServer, Processes, wait_for
from dashkit import Dash, calls_of, dashboard, request, sse_events
from fifoflow import Queue, Worker, keys
from fifoflow.keys import Field, job
from fifoflow.settings import Settings


def fast() -> Settings:
    """Retries come back at once (built in the test, after its environment is set)."""
    return Settings(retry_base_seconds=0.01, retry_max_seconds=0.05)


StartWorker = Callable[..., Worker]
#: What a page costs beyond one command per job shown (counts, pools, the listing...).
CONSTANT = 30


@pytest.fixture
def dash(vqueue: Queue, url: str) -> Iterator[Dash]:
    with dashboard(url, sample_every=0.2, live_every=0.2) as d:
        yield d


@pytest.fixture
def run_worker(url: str, vqueue: Queue) -> Iterator[StartWorker]:
    """``run_worker(concurrency, lease)``: a Worker in a thread on the test's queue, until
    the test ends (or, with ``burst=True``, until the queue is drained)."""
    workers: list[tuple[Worker, threading.Thread]] = []

    def start(concurrency: int = 2, lease: float = 1.5, burst: bool = False) -> Worker:
        w = Worker([vqueue.name], ["fftest_targets"], concurrency, url=url, lease=lease,
                   settings=fast())  # fmt: skip
        t = threading.Thread(target=w.run, kwargs={"burst": burst}, daemon=True)
        t.start()
        workers.append((w, t))
        if burst:
            t.join(60)
            assert not t.is_alive()
            return w
        wait_for(lambda: any(x["name"] == w.name for x in vqueue.broker.live_workers()))
        return w

    yield start
    for w, t in workers:
        w.stop()
        t.join(30)


def test_pages_and_api_show_the_queue(vqueue: Queue, dash: Dash) -> None:
    vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    overview = dash.json("/api/overview")
    mine = next(q for q in overview["queues"] if q["name"] == vqueue.name)
    assert mine["counts"]["queued"] == 3 and mine["pools"][0]["ready"] == 3
    status = dash.json("/api/status")["queues"]  # the old name of the same data
    assert [(q["name"], q["counts"]) for q in status] == [
        (q["name"], q["counts"]) for q in overview["queues"]
    ]
    jobs = dash.json(f"/api/jobs?queue={vqueue.name}&order=oldest")["jobs"]
    assert [j["params"]["x"] for j in jobs] == [0, 1, 2]
    newest = dash.json(f"/api/jobs?queue={vqueue.name}")["jobs"]
    assert [j["params"]["x"] for j in newest] == [2, 1, 0]
    metrics = dash.get("/metrics").text
    assert f'fifoflow_queue_jobs{{queue="{vqueue.name}",status="queued"}} 3.0' in metrics
    assert re.search(r"^fifoflow_workers \d", metrics, re.M)
    for path in ("/", f"/timeline?queue={vqueue.name}", f"/jobs?queue={vqueue.name}",
                 f"/jobs/{vqueue.name}/{jobs[0]['id']}", f"/dead?queue={vqueue.name}"):  # fmt: skip
        r = dash.get(path)
        assert r.status == 200 and vqueue.name in r.text, path
        assert "<title>fifoflow" in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
    # Nothing from elsewhere: styles and script are served here.
    assert dash.get("/static/dashboard.js").status == 200
    assert not re.search(r'(src|href)="(https?:)?//', dash.get("/").text)


def test_bad_input_is_a_clear_4xx(vqueue: Queue, dash: Dash) -> None:
    q = vqueue.name
    for path, status in [
        (f"/api/jobs?queue={q}&status=bogus", 400),
        (f"/api/jobs?queue={q}&limit=0", 400),
        (f"/api/jobs?queue={q}&limit=many", 400),
        (f"/api/jobs?queue={q}&cursor=nonsense", 400),
        ("/api/jobs?queue=no%7Bbraces%7D", 400),
        (f"/api/jobs/{q}/0123456789abcdef00", 404),
        (f"/api/timeline?queue={q}&minutes=1000", 400),
    ]:
        r = dash.get(path)
        assert r.status == status, (path, r.status, r.text)
        assert json.loads(r.text)["error"]
    page = dash.get(f"/jobs/{q}/0123456789abcdef00")
    assert page.status == 404 and "no job with id" in page.text


def test_pagination_walks_every_job_once_in_each_order(vqueue: Queue, dash: Dash) -> None:
    a = vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(7)])
    b = vqueue.push_many("fftest_targets:echo", [{"x": i} for i in range(6)], pool="gpu")
    c = vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(5)], priority=5)
    ids = [j.id for j in a + b + c]  # push order

    def walk(query: str, limit: int = 4) -> list[str]:
        seen, cursor, pages = [], "", 0
        while True:
            page = dash.json(f"/api/jobs?queue={vqueue.name}&limit={limit}{query}{cursor}")
            seen += [j["id"] for j in page["jobs"]]
            pages += 1
            assert pages < 50
            if not page["next"]:
                return seen
            cursor = f"&cursor={page['next']}"

    assert walk("") == ids[::-1]
    assert walk("&order=oldest") == ids
    # queued: run order, across pools: priority first, then push order
    assert walk("&status=queued") == [j.id for j in c] + [j.id for j in a + b]
    assert walk("&status=queued&pool=gpu") == [j.id for j in b]
    # filters the listing cannot apply: scanned in windows, still each job once
    assert walk("&pool=gpu", limit=2) == [j.id for j in b][::-1]
    assert walk("&target=echo&order=oldest", limit=3) == [j.id for j in b]
    assert walk("&target=nothing-like-it") == []


def ok(d: Dash, path: str) -> None:
    r = d.get(path)
    assert r.status == 200, (path, r.status, r.text[:300])


def test_one_page_costs_page_size_plus_a_constant_on_100k_jobs(tmp_path: Path) -> None:
    """The jobs page on 100,000 jobs costs what it costs on 20: the page size plus a
    constant; the old /api/jobs (Queue.jobs()[-limit:]) read every record."""
    srv = EmbeddedServer()  # private: nobody else's commands in the counters
    try:
        big, small = Queue("big", url=srv.url), Queue("small", url=srv.url)
        big.push_many("fftest_targets:add", ({"x": i} for i in range(100_000)))
        small.push_many("fftest_targets:add", ({"x": i} for i in range(20)))
        assert big.stats()["queued"] == 100_000
        client = big.client
        limit = 50
        with dashboard(srv.url, sample_every=0) as d:
            d.json("/api/jobs?queue=big")  # warm: connections made, scripts loaded
            costs: dict[str, tuple[int, int]] = {}
            first = d.json(f"/api/jobs?queue=big&limit={limit}")
            nxt = first["next"]  # all:RANK: the page goes on below that push time
            (old_id,) = client.zrange(keys.ready("big", "default"), 999, 999)
            deep = f"/api/jobs?queue=big&limit={limit}&cursor=all:{int(old_id[:14], 16)}"
            # name: (path, jobs the page shows on "big", on "small")
            for name, (path, on_big, on_small) in {
                "api jobs": (f"/api/jobs?queue={{q}}&limit={limit}", limit, 20),
                "api jobs, next page": (
                    f"/api/jobs?queue={{q}}&limit={limit}&cursor={nxt}", limit, 0),
                "api jobs, run order": (
                    f"/api/jobs?queue={{q}}&limit={limit}&status=queued", limit, 20),
                "jobs page (HTML)": (f"/jobs?queue={{q}}&limit={limit}", limit, 20),
                "dead letters page": (f"/dead?queue={{q}}&limit={limit}", 0, 0),
                "timeline": ("/api/timeline?queue={q}", 0, 0),
                "overview": ("/api/overview", 0, 0),
            }.items():  # fmt: skip
                n_big, calls = calls_of(client, lambda p=path: ok(d, p.format(q="big")))
                n_small, _ = calls_of(client, lambda p=path: ok(d, p.format(q="small")))
                costs[name] = (n_big, n_small)
                print(f"{name}: {n_big} commands on 100,000 jobs, {n_small} on 20; {calls}")
                # the same constant whatever the queue's size: only the page's records differ
                assert abs((n_big - on_big) - (n_small - on_small)) <= 10, (name, n_big, n_small)
                assert n_big <= limit + CONSTANT, (name, n_big)
            n_deep, _ = calls_of(client, lambda: d.json(deep))
            old, _ = calls_of(client, lambda: Queue("big", url=srv.url).jobs(None)[-limit:])
        print(f"one jobs page of {limit}: {costs['api jobs'][0]} commands (deep page: "
              f"{n_deep}); the old /api/jobs: {old}")  # fmt: skip
        assert len(first["jobs"]) == limit and first["next"]
        assert n_deep <= limit + CONSTANT
        assert old > 100_000
    finally:
        srv.close()


def test_timeline_has_a_row_per_slot_and_a_bar_per_attempt(
    vqueue: Queue, dash: Dash, run_worker: StartWorker
) -> None:
    w = run_worker(2)
    slow = vqueue.push("fftest_targets:sleep", {"seconds": 2.5})
    path = f"/api/timeline?queue={vqueue.name}&minutes=2"

    def bars(outcome: str) -> list[dict[str, object]]:
        rows = dash.json(path)["rows"]
        return [
            b for r in rows for b in r["bars"] if b["id"] == slow.id and b["outcome"] == outcome
        ]

    running = wait_for(lambda: bars("running"), timeout=20)
    assert 0 < running[0]["left"] < 100
    boom = vqueue.push("fftest_targets:boom", retries=0)
    done = wait_for(lambda: bars("succeeded"), timeout=20)
    assert done[0]["seconds"] >= 2.5
    data = wait_for(lambda: (d := dash.json(path)) and d["attempts"] >= 2 and d)
    rows = {(r["worker"], r["slot"]): r for r in data["rows"]}
    assert {(w.name, "0"), (w.name, "1")} <= set(rows)
    outcomes = {b["id"]: b["outcome"] for r in data["rows"] for b in r["bars"]}
    assert outcomes[boom.id] == "dead" and outcomes[slow.id] == "succeeded"
    assert all(0 <= r["busy"] <= 1 for r in data["rows"])
    # the page draws one bar per attempt, linked to the job
    html = dash.get(path.replace("/api", "")).text
    assert f'data-job="{slow.id}"' in html and f"/jobs/{vqueue.name}/{slow.id}" in html


def test_job_lists_every_attempt_with_its_worker_and_times(
    vqueue: Queue, dash: Dash, run_worker: StartWorker
) -> None:
    w = run_worker(1)
    j = vqueue.push("fftest_targets:boom", {"message": "kaput"}, retries=2)
    wait_for(lambda: j.status == "dead")
    data = dash.json(f"/api/jobs/{vqueue.name}/{j.id}")
    assert [a["outcome"] for a in data["attempts"]] == ["retry", "retry", "dead"]
    for a in data["attempts"]:
        assert a["worker"] == w.name and a["slot"] == "0" and a["finished"] >= a["started"]
    assert "kaput" in data["job"]["error"] and "Traceback" in data["traceback"]
    ok = vqueue.push("fftest_targets:add", {"x": 2, "y": 3})
    assert ok.result(timeout=20) == 5
    # a Prefect-run job records its flow run's id: the page links to it
    vqueue.client.hset(job(vqueue.name, ok.id), Field.FLOW_RUN_ID, "0b5e-flow-run")
    page = dash.get(f"/jobs/{vqueue.name}/{ok.id}").text
    assert 'href="http://127.0.0.1:4200/runs/flow-run/0b5e-flow-run"' in page
    assert "succeeded" in page and "&#34;x&#34;: 2" in page


def test_overview_streams_updates_and_rates(
    vqueue: Queue, dash: Dash, run_worker: StartWorker
) -> None:
    vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(4)])
    events = sse_events(f"{dash.url}/events/overview", count=100)
    first = next(events)
    assert vqueue.name in first and 'data-status="queued"><b>4</b>' in first
    run_worker(2)
    assert any('data-status="succeeded"><b>4</b>' in e for e in events)
    events.close()
    vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(20)])
    wait_for(lambda: vqueue.stats()["succeeded"] == 24)

    def rates() -> dict[str, object] | None:
        q = next(q for q in dash.json("/api/overview")["queues"] if q["name"] == vqueue.name)
        return q if q["done_1m"] and q["chart"]["bars"] else None

    q = wait_for(rates, timeout=10)
    assert q["done_1m"] > 0 and sum(b["n"] for b in q["chart"]["bars"]) <= 24  # type: ignore[index]


def test_actions_are_off_unless_allowed(vqueue: Queue, dash: Dash) -> None:
    r = dash.post("/actions/purge", {"queue": vqueue.name}, {"X-Fifoflow-Token": "anything"})
    assert r.status == 403 and "--allow-actions" in r.text
    page = dash.get(f"/dead?queue={vqueue.name}").text
    assert "Read-only" in page and 'action="/actions' not in page


def requeued(q: Queue) -> int:
    return sum(q.broker.metrics(q.name)["counters"].get("requeued", {}).values())


def test_actions_need_the_token_and_a_same_origin_form(
    vqueue: Queue, url: str, run_worker: StartWorker
) -> None:
    dead = vqueue.push_many("fftest_targets:boom", [{} for _ in range(3)], retries=0)
    run_worker(1, burst=True)
    assert vqueue.stats()["dead"] == 3
    token = "t0ken-" + "x" * 20
    with dashboard(url, allow_actions=True, token=token, sample_every=0) as d:
        q = vqueue.name
        form = {"queue": q, "ids": dead[0].id, "back": f"/dead?queue={q}"}
        # header token: wrong, then right (a cross-site page cannot send this header)
        assert d.post("/actions/requeue", form, {"X-Fifoflow-Token": "wrong"}).status == 403
        evil = {"X-Fifoflow-Token": token, "Origin": "http://evil.example"}
        assert d.post("/actions/requeue", form, evil).status == 403
        assert dead[0].status == "dead" and requeued(vqueue) == 0
        ok = d.post("/actions/requeue", form, {"X-Fifoflow-Token": token})
        assert ok.status == 200 and json.loads(ok.text)["message"].startswith("requeued 1")
        assert dead[0].status == "queued" and requeued(vqueue) == 1
        # a browser form: needs the CSRF cookie and field, its own origin, and the token
        page = d.get(f"/dead?queue={q}")
        cookie = page.headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in page.headers["set-cookie"] and "strict" in page.headers["set-cookie"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        same = {"Cookie": cookie, "Origin": d.url}
        form = {**form, "ids": dead[1].id, "csrf": csrf}
        no_token = d.post("/actions/requeue", form, same)
        assert no_token.status == 403 and "token is required" in no_token.text
        assert d.post("/actions/requeue", {**form, "token": "wrong"}, same).status == 403
        no_csrf = d.post("/actions/requeue", {**form, "token": token, "csrf": ""}, same)
        assert no_csrf.status == 403 and "CSRF" in no_csrf.text
        other = {"Cookie": cookie, "Origin": "http://evil.example"}
        assert d.post("/actions/requeue", {**form, "token": token}, other).status == 403
        cross = {**same, "Sec-Fetch-Site": "cross-site"}
        assert d.post("/actions/requeue", {**form, "token": token}, cross).status == 403
        no_origin = {"Cookie": cookie}
        assert d.post("/actions/requeue", {**form, "token": token}, no_origin).status == 403
        assert dead[1].status == "dead" and requeued(vqueue) == 1
        done = d.post("/actions/requeue", {**form, "token": token}, same)
        assert done.status == 303 and done.headers["location"].startswith(f"/dead?queue={q}&msg=")
        assert dead[1].status == "queued" and requeued(vqueue) == 2
        # cancel, purge; a job that does not exist; a way back that leaves the site
        hdr = {"X-Fifoflow-Token": token}
        assert d.post("/actions/cancel", {"queue": q, "id": dead[0].id}, hdr).status == 200
        assert dead[0].status == "cancelled"
        assert d.post("/actions/purge", {"queue": q}, hdr).status == 200
        assert vqueue.stats()["dead"] == 0 and vqueue.record(dead[2].id) is None
        missing = d.post("/actions/cancel", {"queue": q, "id": "0" * 18}, hdr)
        assert missing.status == 404
        offsite = d.post("/actions/purge", {**form, "token": token, "back": "//evil.example/x"},
                         same)  # fmt: skip
        assert offsite.status == 303 and offsite.headers["location"].startswith("/?msg=")


def test_cli_binds_loopback_and_prints_the_token_once(vqueue: Queue, procs: Processes) -> None:
    p = procs.start(sys.executable, "-m", "fifoflow", "dashboard", "--port", "0", "--allow-actions")
    assert p.stderr is not None
    m = re.search(r"http://([\d.]+):(\d+)/", p.stderr.readline())
    assert m and m.group(1) == "127.0.0.1"
    token = p.stderr.readline().split("actions token: ", 1)[1].strip()
    base = f"http://127.0.0.1:{m.group(2)}"
    assert json.loads(request("GET", f"{base}/api/overview").text)["queues"] is not None
    hdr = {"X-Fifoflow-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
    body = f"queue={vqueue.name}".encode()
    assert request("POST", f"{base}/actions/purge", body, hdr).status == 200
    hdr["X-Fifoflow-Token"] = token[:-1]
    assert request("POST", f"{base}/actions/purge", body, hdr).status == 403
    # read-only by default, and the token may come from the environment
    env = {"FIFOFLOW_DASHBOARD_TOKEN": "from-env-0123456789"}
    p2 = procs.start(sys.executable, "-m", "fifoflow", "dashboard", "--port", "0",
                     "--allow-actions", env=env)  # fmt: skip
    assert p2.stderr is not None
    port = re.search(r":(\d+)/", p2.stderr.readline()).group(1)  # type: ignore[union-attr]
    assert "from FIFOFLOW_DASHBOARD_TOKEN" in p2.stderr.readline()
    hdr["X-Fifoflow-Token"] = env["FIFOFLOW_DASHBOARD_TOKEN"]
    assert request("POST", f"http://127.0.0.1:{port}/actions/purge", body, hdr).status == 200


def test_grafana_dashboard_uses_only_metrics_that_metrics_exports(
    vqueue: Queue, dash: Dash, run_worker: StartWorker
) -> None:
    board = json.loads((ROOT / "deploy" / "grafana" / "fifoflow.json").read_text())
    exprs = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            exprs.extend(
                v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str)
            )
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(board)
    used = {m for e in exprs for m in re.findall(r"\bfifoflow_[a-z_]+\b", e)}
    assert len(exprs) >= 8 and len(used) >= 10, (len(exprs), used)
    run_worker(1)
    vqueue.push("fftest_targets:add", {"x": 1}).result(timeout=20)
    scrape = dash.get("/metrics").text
    exported = set(re.findall(r"^(fifoflow_[a-z_]+)[{ ]", scrape, re.M))
    assert used <= exported, f"not in /metrics: {sorted(used - exported)}"
    assert board["title"] and board["uid"] and board["panels"]
