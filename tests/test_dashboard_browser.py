"""The dashboard in a real browser: Playwright driving Debian's Chromium (no download),
against a real dashboard, a real server and real worker processes. Each test leaves a
screenshot (the pictures of docs/operations.md: `make screenshots` refreshes them)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EmbeddedServer, Processes, wait_for
from dashkit import Dash, dashboard
from fifoflow import Queue
from fifoflow.keys import Field, job

CHROMIUM = Path("/usr/bin/chromium")
# Every run takes the screenshots (a page that fails to render fails the test); they land
# in docs/images/ only with `make screenshots` (FIFOFLOW_SCREENSHOTS=docs/images), so a test
# run never changes the working tree.
IMAGES = Path(os.environ.get("FIFOFLOW_SCREENSHOTS") or tempfile.mkdtemp(prefix="ff-shots-"))

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "playwright is not installed (pip install 'fifoflow[dev]')", allow_module_level=True
    )
if not CHROMIUM.exists():  # pragma: no cover - depends on the environment
    pytest.skip(f"no Chromium at {CHROMIUM} (apt install chromium)", allow_module_level=True)

#: Retries of the worker processes come back at once.
FAST = {"FIFOFLOW_RETRY_BASE_SECONDS": "0.01", "FIFOFLOW_RETRY_MAX_SECONDS": "0.05"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private server (the screenshots show this test's queues only); workers and CLIs
    started by the test use it."""
    srv = EmbeddedServer()
    monkeypatch.setenv("FIFOFLOW_URL", srv.url)
    yield srv.url
    srv.close()


@contextlib.contextmanager
def live_dashboard(url: str, **config: Any) -> Iterator[Dash]:
    config = {"sample_every": 0.5, "live_every": 0.5, "window": 120.0, **config}
    with dashboard(url, **config) as d:
        yield d


def shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"dashboard-{name}.png"), full_page=True)


def test_overview_shows_counts_rates_and_workers(site: str, page: Page, procs: Processes) -> None:
    thumbs, reports = Queue("thumbnails", url=site), Queue("reports", url=site)
    # two waves of work (the second due 5 s later), failures, another pool, another queue
    for delay in (None, 5.0):
        thumbs.push_many("fftest_targets:sleep", [{"seconds": 0.05 * (i % 5)} for i in range(40)],
                         delay=delay)  # fmt: skip
    thumbs.push_many("fftest_targets:boom", [{"message": f"bad input {i}"} for i in range(3)],
                     retries=1, delay=2)  # fmt: skip
    thumbs.push_many("fftest_targets:add", [{"x": i} for i in range(8)], pool="gpu")
    reports.push_many("fftest_targets:add", [{"x": i} for i in range(12)], priority=3)
    reports.push("fftest_targets:add", {"x": 1}, delay=3600)
    with live_dashboard(site, window=60.0) as d:
        page.goto(d.url + "/")
        card = page.locator('section.queue[data-queue="thumbnails"]')
        expect(card).to_be_visible()
        expect(card.locator('[data-status="queued"] b')).to_have_text("48")
        expect(card.locator('[data-status="delayed"] b')).to_have_text("43")
        procs.worker("fftest_targets", "-q", "thumbnails", "-q", "reports", "-c", "3",
                     "--pool", "default", "--pool", "gpu", "--lease", "3", env=FAST)  # fmt: skip
        wait_for(lambda: sum(thumbs.stats().values()) == thumbs.stats()["succeeded"] + 3, 60)
        wait_for(lambda: reports.stats()["succeeded"] == 12)
        # the live fragment follows the server (server-sent events, no reload)
        expect(card.locator('[data-status="succeeded"] b')).to_have_text("88")
        expect(card.locator('[data-status="dead"] b')).to_have_text("3")
        expect(page.locator("#live")).to_have_text("live")
        expect(card.locator("svg rect.ev-succeeded").nth(3)).to_be_attached()
        expect(card.locator("svg rect.ev-failed").first).to_be_attached()
        expect(card.locator(".rates .done-1m")).not_to_have_text("—")
        expect(card.locator('tr[data-pool="gpu"] td').nth(4)).to_have_text("8")
        expect(page.locator("table.workers tbody tr[data-worker]")).to_have_count(1)
        rq = page.locator('section.queue[data-queue="reports"]')
        expect(rq.locator('[data-status="delayed"] b')).to_have_text("1")
        assert int(page.locator("#overview").get_attribute("data-updates") or 0) >= 1
        shot(page, "overview")


def test_timeline_draws_a_bar_for_a_job_that_starts(
    vqueue: Queue, url: str, page: Page, procs: Processes
) -> None:
    procs.worker("fftest_targets", "-c", "3", "--lease", "1.5", env=FAST)
    wait_for(lambda: vqueue.broker.live_workers())
    # three waves, due 0, 6 and 12 s from now: the slots idle between them
    for delay in (None, 6.0, 12.0):
        params = [{"seconds": 0.2 + 0.15 * (i % 7)} for i in range(9)]
        vqueue.push_many("fftest_targets:sleep", params, delay=delay)
    vqueue.push_many("fftest_targets:boom", [{}, {}], retries=1, delay=6.0)
    wait_for(lambda: vqueue.stats()["succeeded"] + vqueue.stats()["dead"] == 29, 60)
    with live_dashboard(url) as d:
        page.goto(f"{d.url}/timeline?queue={vqueue.name}&minutes=1")
        rows = page.locator(".gantt .grow[data-slot]")
        expect(rows).to_have_count(3)
        expect(page.locator(".gantt .axis .tick")).to_have_count(7)  # every 10 s
        expect(page.locator('.bar[data-outcome="dead"]')).to_have_count(2)
        expect(page.locator('.bar[data-outcome="retry"]')).to_have_count(2)
        expect(page.locator('.bar[data-outcome="succeeded"]')).to_have_count(27)
        long = vqueue.push("fftest_targets:sleep", {"seconds": 4})
        bar = page.locator(f'.bar[data-job="{long.id}"]')
        # it appears while it runs (from the worker's heartbeat), without a reload...
        expect(bar).to_have_attribute("data-outcome", "running")
        shot(page, "timeline")
        # ...and becomes a finished attempt when it ends
        expect(bar).to_have_attribute("data-outcome", "succeeded", timeout=20_000)
        assert float((bar.get_attribute("style") or "").split("width:")[1].rstrip("%;")) > 0
        page.goto(d.url + (bar.get_attribute("href") or ""))  # the bar links to its job
        expect(page.locator("h1")).to_contain_text(long.id)


def test_jobs_page_paginates_with_a_cursor(vqueue: Queue, url: str, page: Page) -> None:
    pushed = vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(25)])
    pushed += vqueue.push_many("fftest_targets:echo", [{"n": i} for i in range(5)], priority=9)
    with live_dashboard(url) as d:
        page.goto(f"{d.url}/jobs?queue={vqueue.name}&limit=10")
        rows = page.locator("table.jobs tbody tr[data-job]")
        seen: list[str] = []
        for n in range(3):
            expect(rows).to_have_count(10)
            seen += [rows.nth(i).get_attribute("data-job") or "" for i in range(10)]
            if n == 0:
                shot(page, "jobs")
            if n < 2:
                with page.expect_navigation():
                    page.locator("a.next").click()
        expect(page.locator("a.next")).to_have_count(0)
        assert seen == [j.id for j in pushed][::-1]  # newest first, each job once
        page.locator("a.first").click()
        expect(rows.first).to_have_attribute("data-job", pushed[-1].id)
        # queued jobs in run order: the priority-9 ones first, then push order
        page.select_option('select[name="status"]', "queued")
        page.locator(".controls button").click()
        expect(rows.first).to_have_attribute("data-job", pushed[25].id)
        expect(rows.nth(5)).to_have_attribute("data-job", pushed[0].id)
        page.fill('input[name="target"]', "echo")
        page.locator(".controls button").click()
        expect(rows).to_have_count(5)


def test_job_page_shows_attempts_error_and_traceback(
    vqueue: Queue, url: str, page: Page, procs: Processes
) -> None:
    j = vqueue.push("fftest_targets:boom", {"message": "disk quota exceeded"}, retries=2)
    ok = vqueue.push("fftest_targets:echo", {"size": [640, 480]})
    procs.worker("fftest_targets", "-c", "2", env=FAST)
    wait_for(lambda: j.status == "dead" and ok.status == "succeeded", 30)
    vqueue.client.hset(job(vqueue.name, ok.id), Field.FLOW_RUN_ID, "7c1d0e52-flow-run")
    with live_dashboard(url) as d:
        page.goto(f"{d.url}/jobs/{vqueue.name}/{j.id}")
        expect(page.locator("h1 .status")).to_have_text("dead")
        attempts = page.locator("table.attempts tr.attempt")
        expect(attempts).to_have_count(3)
        expect(attempts.nth(0)).to_contain_text("retry")
        expect(attempts.nth(2)).to_contain_text("dead")
        expect(page.locator("pre.error")).to_contain_text("disk quota exceeded")
        expect(page.locator("pre.traceback")).to_contain_text("ValueError")
        expect(page.locator("pre.params")).to_contain_text('"message": "disk quota exceeded"')
        shot(page, "job")
        page.goto(f"{d.url}/jobs/{vqueue.name}/{ok.id}")
        expect(page.locator("pre.result")).to_contain_text("640")
        link = page.locator("a.prefect")
        expect(link).to_have_attribute(
            "href", "http://127.0.0.1:4200/runs/flow-run/7c1d0e52-flow-run"
        )


def test_requeue_from_the_dead_letters_needs_the_token(
    vqueue: Queue, url: str, page: Page, procs: Processes
) -> None:
    dead = vqueue.push_many("fftest_targets:boom", [{"message": f"no {i}"} for i in range(4)],
                            retries=0)  # fmt: skip
    w = procs.worker("fftest_targets", "--burst")
    assert w.wait(60) == 0 and vqueue.stats()["dead"] == 4
    token = "browser-test-token-0123456789"
    with live_dashboard(url, allow_actions=True, token=token) as d:
        page.goto(f"{d.url}/dead?queue={vqueue.name}")
        expect(page.locator("table.jobs tbody tr[data-job]")).to_have_count(4)
        # without the token: refused, nothing changes
        page.check(f'input[name="ids"][value="{dead[0].id}"]')
        page.locator("button.requeue").click()
        expect(page.locator("h1")).to_have_text("Refused")
        expect(page.locator(".flash.error")).to_contain_text("token is required")
        shot(page, "refused")
        assert dead[0].status == "dead"
        # with it: requeued, back on the dead letters with a message
        page.goto(f"{d.url}/dead?queue={vqueue.name}")
        page.check(f'input[name="ids"][value="{dead[0].id}"]')
        page.check(f'input[name="ids"][value="{dead[1].id}"]')
        page.fill('#dead-actions input[name="token"]', token)
        page.locator("button.requeue").click()
        expect(page.locator(".flash")).to_contain_text("requeued 2 dead job(s)")
        expect(page.locator("table.jobs tbody tr[data-job]")).to_have_count(2)
        assert dead[0].status == "queued" and dead[1].status == "queued"
        shot(page, "dead")
