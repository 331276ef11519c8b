"""A thread slot's timeout counts the job's own time: a worker whose call has a slow
set-up (a Prefect child run created on a loaded machine) starts the clock when the set-up
ends (``slots.timeout_starts_now``), and the timeout is still enforced from there."""

from __future__ import annotations

import threading
import time
from typing import Any

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


def work_off(q: Queue, url: str, restart: bool) -> None:
    kind = SlowSetupWorker if restart else PlainSlowSetupWorker
    w = kind([q.name], ["fftest_targets"], 1, url=url)
    t = threading.Thread(target=w.run, kwargs={"burst": True}, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive()


def test_a_slow_set_up_does_not_count_against_the_jobs_timeout(vqueue: Queue, url: str) -> None:
    quick = vqueue.push("fftest_targets:add", {"x": 1}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=True)
    rec = vqueue.record(quick.id)
    assert rec is not None and (rec["status"], rec["result"]) == ("succeeded", 1), rec


def test_the_timeout_still_holds_from_the_end_of_the_set_up(vqueue: Queue, url: str) -> None:
    slow = vqueue.push("fftest_targets:sleep", {"seconds": 30}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=True)
    rec = vqueue.record(slow.id)
    assert rec is not None and rec["status"] == "dead"
    assert rec["error"] == f"TimeoutError: job exceeded its timeout of {TIMEOUT:g}s"
    assert rec["finished_at"] - rec["started_at"] >= SETUP + TIMEOUT - 0.05


def test_without_a_restart_the_clock_runs_from_the_attempts_start(vqueue: Queue, url: str) -> None:
    quick = vqueue.push("fftest_targets:add", {"x": 1}, timeout=TIMEOUT, retries=0)
    work_off(vqueue, url, restart=False)
    rec = vqueue.record(quick.id)
    assert rec is not None and rec["status"] == "dead", rec
    assert "exceeded its timeout" in rec["error"]
