"""A slot's timeout counts the job's own time: a worker whose call has a slow set-up (a
Prefect child run created on a loaded machine) starts the clock when the set-up ends
(``execution.timeout_starts_now``), and the timeout is still enforced from there; in
thread slots and in process slots (whose call comes from a call factory)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from fifoflow import Queue, Worker
from fifoflow.execution import direct_call, timeout_starts_now

SETUP = 1.5  # seconds of set-up, longer than the jobs' timeout
TIMEOUT = 1.0


class SlowSetupWorker(Worker):
    """A worker whose calls first spend SETUP seconds on set-up, as Prefect mode spends
    creating a child run, then start the job's clock (``call_starts_clock``)."""

    call_starts_clock = True

    def call(self, job: Any, fn: Any, kwargs: dict[str, Any], extra: dict[str, str]) -> Any:
        time.sleep(SETUP)
        timeout_starts_now()
        return direct_call(job, fn, kwargs, extra)


class PlainSlowSetupWorker(SlowSetupWorker):
    """The same set-up in a worker that does not say its call starts the clock."""

    call_starts_clock = False


class ProcessSlowSetupWorker(Worker):
    """The same in process slots: its call factory's calls spend SETUP seconds, then start
    the clock (``fftest_targets.slow_setup_call``)."""

    call_starts_clock = True

    def process_setup(self) -> tuple[str, str]:
        return "fftest_targets:slow_setup_call", json.dumps({"setup": SETUP})


class PlainProcessSlowSetupWorker(ProcessSlowSetupWorker):
    call_starts_clock = False


KINDS = {
    ("threads", True): SlowSetupWorker,
    ("threads", False): PlainSlowSetupWorker,
    ("processes", True): ProcessSlowSetupWorker,
    ("processes", False): PlainProcessSlowSetupWorker,
}
slots = pytest.mark.parametrize("mode", ["threads", "processes"])


def work_off(q: Queue, url: str, restart: bool, mode: str) -> None:
    kind = KINDS[(mode, restart)]
    w = kind([q.name], ["fftest_targets"], 1, url=url, processes=mode == "processes")
    t = threading.Thread(target=w.run, kwargs={"burst": True}, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive()


@slots
def test_a_slow_set_up_does_not_count_against_the_jobs_timeout(
    vqueue: Queue, url: str, mode: str
) -> None:
    quick = vqueue.push("fftest_targets:add", {"x": 1}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=True, mode=mode)
    rec = vqueue.record(quick.id)
    assert rec is not None and (rec["status"], rec["result"]) == ("succeeded", 1), rec


@slots
def test_the_timeout_still_holds_from_the_end_of_the_set_up(
    vqueue: Queue, url: str, mode: str
) -> None:
    slow = vqueue.push("fftest_targets:sleep", {"seconds": 30}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=True, mode=mode)
    rec = vqueue.record(slow.id)
    assert rec is not None and rec["status"] == "dead"
    assert rec["error"] == f"TimeoutError: job exceeded its timeout of {TIMEOUT:g}s"
    assert rec["finished_at"] - rec["started_at"] >= SETUP + TIMEOUT - 0.05


@slots
def test_without_a_restart_the_clock_runs_from_the_attempts_start(
    vqueue: Queue, url: str, mode: str
) -> None:
    quick = vqueue.push("fftest_targets:add", {"x": 1}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=False, mode=mode)
    rec = vqueue.record(quick.id)
    assert rec is not None and rec["status"] == "dead", rec
    assert "exceeded its timeout" in rec["error"]
