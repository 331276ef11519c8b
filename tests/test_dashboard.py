"""The dashboard and /metrics, served for real on a free loopback port."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Processes, wait_for
from fifoflow import Queue
from fifoflow.dashboard import make_server


@pytest.fixture
def dashboard(vqueue: Queue) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_api_and_metrics_show_the_queue(vqueue: Queue, dashboard: str) -> None:
    vqueue.push_many("fftest_targets:add", [{"x": i} for i in range(3)])
    status = json.loads(get(f"{dashboard}/api/status"))
    assert status["queues"][vqueue.name]["queued"] == 3
    jobs = json.loads(get(f"{dashboard}/api/jobs?queue={vqueue.name}"))
    assert [j["params"]["x"] for j in jobs] == [0, 1, 2]
    metrics = get(f"{dashboard}/metrics")
    assert f'fifoflow_jobs{{queue="{vqueue.name}",status="queued"}} 3' in metrics
    assert re.search(r"^fifoflow_workers \d+$", metrics, re.M)
    assert "<title>fifoflow</title>" in get(dashboard)


def test_cli_dashboard_binds_loopback_by_default(vqueue: Queue, procs: Processes) -> None:
    p = procs.start(sys.executable, "-m", "fifoflow", "dashboard", "--port", "0")
    assert p.stderr is not None
    line = p.stderr.readline()
    m = re.search(r"http://([\d.]+):(\d+)/", line)
    assert m, line
    assert m.group(1) == "127.0.0.1"
    status = json.loads(get(f"http://127.0.0.1:{m.group(2)}/api/status"))
    assert "queues" in status


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_page_renders_the_queue_in_a_browser(vqueue: Queue, dashboard: str, tmp_path: Path) -> None:
    vqueue.push("fftest_targets:add", {"x": 1})

    def dom() -> str:
        r = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chrome'}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                dashboard,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r.stdout if vqueue.name in r.stdout else ""

    html = wait_for(dom, timeout=90, interval=1)
    assert "fftest_targets:add" in html or vqueue.name in html
