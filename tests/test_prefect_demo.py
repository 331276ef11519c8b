"""``fifoflow demo`` end to end, as a user runs it: no FIFOFLOW_URL (the embedded server in
FIFOFLOW_HOME), no PREFECT_API_URL (Prefect's local ephemeral API in PREFECT_HOME)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fifoflow import server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect-demo"), pytest.mark.timeout(300)]


def test_demo_exits_0_with_one_dead_and_one_retried_job(isolated_env: Path) -> None:
    env = {
        **os.environ,
        "COLUMNS": "120",
        # A fresh PREFECT_HOME: the demo's first start of the local API creates its database.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fifoflow", "demo"],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
    finally:
        server.stop(isolated_env)  # the embedded server the demo started
    elapsed = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, (out[-4000:], proc.stderr[-4000:])
    assert "24 jobs in" in out
    assert "23 succeeded (1 after a retry), 1 dead after 3 attempts." in " ".join(out.split())
    assert "FloatingPointError" in out
    assert "prefect server start" in out
    assert re.search(r"fifoflow-dispatcher/demo-\d{8}-\d{6}\[default\]", out), out
    # Every row of the table names its child flow run.
    assert len(re.findall(r"│ [0-9a-f]{8} │", out)) == 24, out
    print(f"\ndemo: {elapsed:.1f}s\n" + "\n".join(out.splitlines()[-6:]))
