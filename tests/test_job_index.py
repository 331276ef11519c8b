"""The ``all`` index (every job by push order, for listings) keeps one entry per run of
consecutive ids, a push's batch, not one per job: listings page through it newest or
oldest first, each job once; records that are trimmed or purged count their run down, and
a run whose records are all gone leaves the index."""

from __future__ import annotations

import time

import pytest

from fifoflow import Queue, broker_push, keys
from fifoflow.keys import Key

T = "fftest_targets:add"
pytestmark = pytest.mark.timeout(120)


def index(q: Queue) -> list[str]:
    return [str(m) for m in q.client.zrange(keys.queue_key(q.name, Key.ALL), 0, -1)]


def listing(q: Queue, newest_first: bool, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page, cursor = q.broker.page(q.name, limit=limit, cursor=cursor, newest_first=newest_first)
        ids += [r["id"] for r in page]
        if cursor is None:
            return ids


def test_a_bulk_push_is_a_few_index_entries_and_lists_in_push_order(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_push, "BATCH", 4)  # a push of 10 is three staged batches
    before = queue.push(T, {"x": -1})
    bulk = queue.push_many(T, [{"x": i} for i in range(10)])
    after = queue.push(T, {"x": 10})
    pushed = [before.id, *(j.id for j in bulk), after.id]
    assert pushed == sorted(pushed)  # ids sort by push time
    entries = index(queue)
    assert len(entries) == 2 + 3, entries  # two lone jobs, three runs of 4, 4 and 2
    assert entries[0] == before.id and entries[-1] == after.id
    assert [e.split(" ")[1:] for e in entries[1:-1]] == [["4", "4"], ["4", "4"], ["2", "2"]]
    for limit in (1, 3, 5, 50):
        assert listing(queue, True, limit) == pushed[::-1], limit
        assert listing(queue, False, limit) == pushed, limit


def test_trimmed_records_count_their_run_down_and_an_empty_run_leaves(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_push, "BATCH", 3)
    parent = queue.push(T, {"x": 0})
    assert queue.cancel(parent.id)  # a failed parent: jobs that depend on it are dead at once
    dead = queue.push_many(T, [{"x": i} for i in range(7)], depends_on=[parent])
    assert {j.status for j in dead} == {"dead"}
    gone = [j.id for j in dead[:4]]  # the first run of 3 and one of the second
    old = time.time() - queue.broker.policy.ttl - 60
    queue.client.zadd(keys.queue_key(queue.name, Key.DEAD), dict.fromkeys(gone, old))
    for job_id in gone:  # as their records' own expiry does
        queue.client.delete(keys.job(queue.name, job_id))
    queue.broker.maintain(queue.name)
    entries = index(queue)
    assert entries == [parent.id, f"{dead[3].id} 3 2", dead[6].id], entries
    assert listing(queue, True, 2) == [j.id for j in dead[4:]][::-1] + [parent.id]
    assert queue.purge_dead() == 3
    assert index(queue) == [parent.id]  # the purged jobs' runs are gone
