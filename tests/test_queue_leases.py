"""Guarantee 3: leases, fencing tokens, lease expiry and release put a job back at its
original place; a worker whose lease was taken over cannot overwrite the record."""

from __future__ import annotations

import time

from fifoflow import Queue
from qops import claim, complete, extend, maintain, release

T = "fftest_targets:add"


def ids(claimed: list) -> list[str]:  # type: ignore[type-arg]
    return [c.id for c in claimed]


def test_stale_token_is_refused(queue: Queue) -> None:
    job = queue.push(T, {"x": 1})
    _, [old] = claim(queue, "w-old", 1, ["default"], 0.05)
    time.sleep(0.08)
    _, [new] = claim(queue, "w-new", 1, ["default"], 30)  # reaps, then claims the same job
    assert new.id == old.id and new.token != old.token
    assert new.attempts == 2
    before = job.to_dict()

    assert complete(queue, old, "ok", "99").outcome == "stale"
    assert complete(queue, old, "fail", "E: x", traceback="tb").outcome == "stale"
    assert complete(queue, old, "dead", "E: x").outcome == "stale"
    assert extend(queue, [old], 60) == [old.id]
    assert release(queue, [old]) == 0
    after = job.to_dict()
    assert after == before
    assert (after["status"], after["worker"], after["result"]) == ("running", "w-new", None)
    assert queue.traceback(job.id) is None

    assert extend(queue, [new], 30) == []
    assert complete(queue, new, "ok", "2").outcome == "succeeded"
    assert complete(queue, old, "ok", "99").outcome == "stale"
    # A re-sent report (its reply lost) is recognised: the first outcome, nothing changed.
    assert complete(queue, new, "ok", "3").outcome == "succeeded"
    assert queue.job(new.id).result(timeout=0) == 2  # recorded exactly once
    assert job.to_dict()["result"] == 2
    assert queue.stats()["succeeded"] == 1


def test_ack_after_lease_ran_out_but_before_reaping_counts(queue: Queue) -> None:
    """Nobody else holds the job yet, so the late ack is the one record."""
    queue.push(T)
    b = queue.push(T).id
    _, [c] = claim(queue, "w", 1, ["default"], 0.0)
    done = complete(queue, c, "ok", "1", claim=("w", 1, ["default"], 30))
    assert done.outcome == "succeeded"
    assert ids(done.claimed) == [b]


def test_stale_completion_still_claims_for_the_free_slot(queue: Queue) -> None:
    a = queue.push(T).id
    b = queue.push(T).id
    _, [old] = claim(queue, "w", 1, ["default"], 0.0)
    maintain(queue)  # reaped: `a` is back in line, `old` is void
    done = complete(queue, old, "ok", "1", claim=("w", 2, ["default"], 30))
    assert done.outcome == "stale"
    assert ids(done.claimed) == [a, b]
    assert queue.record(a)["result"] is None  # type: ignore[index]


def test_lease_expiry_returns_jobs_to_their_original_place(queue: Queue) -> None:
    a, b, c = (queue.push(T, {"x": i}).id for i in range(3))
    d = queue.push(T, {"x": 3}, priority=-1).id
    _, lost = claim(queue, "dies", 2, ["default"], 0.1)
    assert ids(lost) == [a, b]
    assert queue.job_ids("running") == [a, b]
    time.sleep(0.15)
    _, claimed = claim(queue, "w2", 4, ["default"], 30)
    assert ids(claimed) == [a, b, c, d]
    assert [x.attempts for x in claimed] == [2, 2, 1, 1]
    assert queue.client.hget(f"ff:{{{queue.name}}}:job:{a}", "lost") == "1"


def test_maintain_reaps_expired_leases(queue: Queue) -> None:
    job = queue.push(T)
    # a lease a busy machine cannot outlast between two calls by accident
    claim(queue, "w", 1, ["default"], 1.5)
    assert maintain(queue) == (0, 0, 0)  # not yet expired
    time.sleep(1.55)
    assert maintain(queue) == (0, 1, 0)
    rec = job.to_dict()
    assert (rec["status"], rec["worker"]) == ("queued", None)
    assert queue.stats()["queued"] == 1


def test_expired_high_priority_job_goes_before_older_low_priority(queue: Queue) -> None:
    low = queue.push(T, priority=0).id
    high = queue.push(T, priority=7).id
    _, [c] = claim(queue, "w", 1, ["default"], 0.0)
    assert c.id == high
    assert ids(claim(queue, "w", 2, ["default"], 30)[1]) == [high, low]


def test_expired_job_returns_to_its_own_pool(queue: Queue) -> None:
    g = queue.push(T, pool="gpu").id
    claim(queue, "w", 1, ["gpu"], 0.0)
    assert claim(queue, "w", 1, ["default"], 30)[1] == []
    assert ids(claim(queue, "w", 1, ["gpu"], 30)[1]) == [g]


def test_extend_keeps_the_lease(queue: Queue) -> None:
    job = queue.push(T)
    _, [c] = claim(queue, "w", 1, ["default"], 1.5)  # extended long before it runs out
    extended = time.monotonic()
    assert extend(queue, [c], 30) == []
    time.sleep(1.55)  # past the first lease
    assert maintain(queue)[1] == 0
    assert job.status == "running"
    next_event, _ = claim(queue, "w", 1, ["default"], 30)
    since = time.monotonic() - extended
    # the lease now runs out 30 s after the extend: next_event is 30 s less the time since
    assert 30 - since - 0.2 < next_event <= 30 - 1.5, (next_event, since)
    assert complete(queue, c, "ok", "null").outcome == "succeeded"


def test_extend_reports_lost_and_finished_jobs(queue: Queue) -> None:
    a, b = queue.push(T).id, queue.push(T).id
    _, [ca, cb] = claim(queue, "w", 2, ["default"], 30)
    complete(queue, cb, "ok", "null")
    assert extend(queue, [ca, cb], 30) == [b]
    assert extend(queue, [], 30) == []
    assert ca.id == a


def test_release_puts_jobs_back_at_their_original_place(queue: Queue) -> None:
    a, b, c = (queue.push(T, {"x": i}).id for i in range(3))
    _, held = claim(queue, "stopping", 2, ["default"], 30)
    assert ids(held) == [a, b]
    assert release(queue, held) == 2
    assert release(queue, held) == 0  # tokens are void now
    rec = queue.record(a)
    assert rec is not None
    assert rec["status"] == "queued"
    assert (rec["attempts"], rec["worker"], rec["started_at"]) == (0, None, None)
    _, claimed = claim(queue, "w2", 3, ["default"], 30)
    assert ids(claimed) == [a, b, c]
    assert [x.attempts for x in claimed] == [1, 1, 1]  # a release is not an attempt
    assert release(queue, []) == 0


def test_released_token_cannot_complete(queue: Queue) -> None:
    job = queue.push(T)
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    release(queue, [c])
    assert complete(queue, c, "ok", "1").outcome == "stale"
    assert job.status == "queued"


def test_complete_acks_and_claims_next_in_one_call(queue: Queue) -> None:
    a, b, c = (queue.push(T, {"x": i}).id for i in range(3))
    _, [ca] = claim(queue, "w", 1, ["default"], 30)
    done = complete(queue, ca, "ok", "0", claim=("w", 1, ["default"], 30))
    assert done.outcome == "succeeded"
    assert ids(done.claimed) == [b]
    done = complete(queue, done.claimed[0], "ok", "1", claim=("w", 5, ["default"], 30))
    assert ids(done.claimed) == [c]
    done = complete(queue, done.claimed[0], "ok", "2", claim=("w", 1, ["default"], 30))
    assert done.claimed == [] and done.next_event == -1
    assert queue.stats()["succeeded"] == 3
    assert queue.job(a).result(timeout=0) == 0


def test_complete_records_an_extra_field(queue: Queue) -> None:
    job = queue.push(T)
    _, [c] = claim(queue, "w", 1, ["default"], 30)
    complete(queue, c, "ok", "null", extra={"flow_run_id": "abc-123"})
    assert job.to_dict()["flow_run_id"] == "abc-123"


def test_running_jobs_are_tracked(queue: Queue) -> None:
    queue.push_many(T, [{}] * 3)
    _, held = claim(queue, "w", 2, ["default"], 30)
    assert queue.stats()["running"] == 2
    assert queue.job_ids("running") == sorted(ids(held))
    assert {r["worker"] for r in queue.jobs("running")} == {"w"}


def test_a_lost_write_never_hands_out_the_same_token_twice(queue: Queue) -> None:
    """A server that loses its last write (appendfsync everysec and a crash, an async
    replica promoted) forgets a claim: the job is claimable again. Its next claim must get
    another fencing token, or the first worker's late report would pass as the second's."""
    job = queue.push(T, {"x": 1})
    client = queue.client
    prefix = f"ff:{{{queue.name}}}:"
    saved = {k: client.dump(k) for k in client.scan_iter(prefix + "*") if client.type(k) != "none"}
    _, [first] = claim(queue, "w-1", 1, ["default"], 30)
    # The server loses everything since `saved` (the claim): put the keys back as they were.
    for k in client.scan_iter(prefix + "*"):
        client.delete(k)
    for k, payload in saved.items():
        client.restore(k, 0, payload)
    _, [second] = claim(queue, "w-2", 1, ["default"], 30)
    assert second.id == first.id == job.id
    assert second.token != first.token
    assert complete(queue, first, "ok", "1").outcome == "stale"  # the forgotten claim
    assert complete(queue, second, "ok", "2").outcome == "succeeded"
    assert job.result(timeout=1) == 2
