"""A worker serving many queues claims only where a claim can take a job (``due_in``: one
round trip of reads), yet keeps the queues' order and never misses a job that becomes due
in a queue it skipped."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from conftest import Processes, wait_for
from fifoflow import Queue
from qops import claim

T = "fftest_targets:record"
pytestmark = pytest.mark.timeout(90)


def starts(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [json.loads(line)["n"] for line in log.read_text().splitlines() if line]


def test_due_in_says_where_a_claim_can_take_a_job(url: str) -> None:
    base = "dq-" + uuid.uuid4().hex[:8]
    ready, later, empty, lost = (Queue(f"{base}-{i}", url=url) for i in range(4))
    try:
        ready.push(T, {"log": "-", "n": 1}, pool="p")
        later.push(T, {"log": "-", "n": 2}, pool="p", delay=30)
        lost.push(T, {"log": "-", "n": 3}, pool="p")
        assert claim(lost, "gone", 1, ["p"], 0.05)[1]  # its lease runs out at once
        time.sleep(0.1)
        names = [q.name for q in (ready, later, empty, lost)]
        due = ready.broker.due_in(names, ["other", "p"])
        assert due[0] == 0.0 and 25 < due[1] <= 30 and due[2] == -1.0 and due[3] == 0.0
        assert ready.broker.due_in([ready.name], ["other"]) == [-1.0]  # not a served pool
    finally:
        for q in (ready, later, empty, lost):
            q.close()


def test_a_many_queue_worker_keeps_order_and_runs_what_becomes_due(
    url: str, procs: Processes, tmp_path: Path
) -> None:
    base = "mq-" + uuid.uuid4().hex[:8]
    queues = [Queue(f"{base}-{i}", url=url) for i in range(6)]
    log = tmp_path / "starts.log"
    try:
        queues[4].push_many(T, [{"log": str(log), "n": 40 + i} for i in range(3)])
        queues[1].push_many(T, [{"log": str(log), "n": 10 + i} for i in range(3)])
        due = queues[5].push(T, {"log": str(log), "n": 50}, delay=2.0)
        args = [a for q in queues for a in ("-q", q.name)]
        procs.worker("fftest_targets", *args, "-c", "1", env={"FIFOFLOW_URL": url})
        wait_for(lambda: len(starts(log)) == 6, timeout=30)
        assert starts(log) == [10, 11, 12, 40, 41, 42]  # first-listed queue first
        wait_for(lambda: due.to_dict()["status"] == "succeeded", timeout=20)
        assert starts(log)[-1] == 50  # skipped while not due, claimed once due
        rec = due.to_dict()
        # at its due time, not at the idle wait's 5 s safety net: the skipped queue's due
        # time bounded the wait
        assert rec["created_at"] + 2.0 <= rec["started_at"] < rec["created_at"] + 3.5
    finally:
        for q in queues:
            q.close()
