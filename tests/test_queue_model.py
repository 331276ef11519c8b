"""Property-based: random sequences of push / claim / ack / fail / release / lease expiry
against a small in-memory model. No job is lost or duplicated, every claim returns exactly
the jobs the model expects in the model's order (priority desc, then push order, across
the pools asked for), outcomes and attempt counts agree, and so do the final counts.

Time is taken out of the picture: retries have no back-off (a failed job is due at once,
so the next housekeeping pass promotes it), and "expire" means a claim with a 0 s lease,
which the next housekeeping pass (any claim, or ``maintain``) reaps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fifoflow import Queue
from fifoflow.records import Claimed
from fifoflow.settings import Settings
from qops import claim, complete, maintain, release

T = "fftest_targets:noop"
POOLS = ("a", "b")
MAX_LOST = 2


@dataclass
class MJob:
    idx: int
    priority: int
    pool: str
    retries: int
    status: str = "queued"
    attempts: int = 0
    failures: int = 0
    token: str | None = None
    doomed: bool = False  # claimed with a 0 s lease: reaped by the next housekeeping
    lost: int = 0  # leases lost; past MAX_LOST the job is dead (a poison job)
    done: tuple[str, str] | None = None  # (token, outcome) of the last report


@dataclass
class Model:
    jobs: dict[str, MJob] = field(default_factory=dict)
    retry_due: list[str] = field(default_factory=list)

    def order(self, job_id: str) -> tuple[int, int]:
        j = self.jobs[job_id]
        return (-j.priority, j.idx)

    def housekeep(self) -> tuple[int, int]:
        promoted = len(self.retry_due)
        for i in self.retry_due:
            self.jobs[i].status = "queued"
        self.retry_due.clear()
        reaped = 0
        for j in self.jobs.values():
            if j.status == "running" and j.doomed:
                j.lost += 1
                j.status = "dead" if j.lost > MAX_LOST else "queued"
                j.token, j.doomed = None, False
                reaped += 1
        return promoted, reaped

    def claim(self, n: int, pools: list[str]) -> list[str]:
        self.housekeep()
        ready = [i for i, j in self.jobs.items() if j.status == "queued" and j.pool in pools]
        return sorted(ready, key=self.order)[:n]

    def current(self, c: Claimed) -> MJob | None:
        j = self.jobs[c.id]
        return j if j.status == "running" and j.token == c.token else None


push_op = st.tuples(
    st.just("push"),
    st.integers(-1, 2),
    st.sampled_from(POOLS),
    st.integers(0, 2),
    st.integers(1, 3),  # how many (push_many when > 1)
)
claim_op = st.tuples(
    st.just("claim"),
    st.integers(1, 3),
    st.sampled_from([["a"], ["b"], ["a", "b"], ["b", "a"]]),
    st.booleans(),  # doomed: lease 0
)
held_op = st.tuples(st.sampled_from(["ack", "fail", "release"]), st.integers(0, 1000))
maintain_op = st.tuples(st.just("maintain"))
ops_strategy = st.lists(
    st.one_of(push_op, push_op, claim_op, claim_op, held_op, held_op, maintain_op),
    min_size=1,
    max_size=45,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=ops_strategy)
def test_queue_matches_model(any_url: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    q = Queue(
        "m-" + uuid.uuid4().hex[:12],
        url=any_url,
        settings=Settings(retry_base_seconds=0.0, retry_max_seconds=0.0),
    )
    model = Model()
    held: list[Claimed] = []
    pushed: list[str] = []
    try:
        for op in ops:
            kind = op[0]
            if kind == "push":
                _, priority, pool, retries, count = op
                jobs = q.push_many(T, [{"i": len(pushed) + k} for k in range(count)],
                                   priority=priority, pool=pool, retries=retries)  # fmt: skip
                for job in jobs:
                    assert job.id not in model.jobs
                    assert not pushed or job.id > pushed[-1]  # ids sort by creation
                    model.jobs[job.id] = MJob(len(pushed), priority, pool, retries)
                    pushed.append(job.id)
            elif kind == "claim":
                _, n, pools, doomed = op
                expected = model.claim(n, pools)
                _, claimed = claim(q, "w", n, pools, 0.0 if doomed else 60.0)
                assert [c.id for c in claimed] == expected
                for c in claimed:
                    j = model.jobs[c.id]
                    j.status, j.token, j.doomed = "running", c.token, doomed
                    j.attempts += 1
                    assert c.attempts == j.attempts
                    held.append(c)
            elif kind == "maintain":
                promoted, reaped, trimmed = maintain(q)
                assert (promoted, reaped, trimmed) == (*model.housekeep(), 0)
            elif held:
                c = held[op[1] % len(held)]
                j = model.current(c)
                if kind == "release":
                    assert release(q, [c]) == (1 if j else 0)
                    if j:
                        j.status, j.token, j.doomed = "queued", None, False
                        j.attempts -= 1
                    continue
                outcome = complete(q, c, "ok" if kind == "ack" else "fail", "null").outcome
                done = model.jobs[c.id].done
                if j is None:
                    # A report re-sent with the token of the last report gets its outcome
                    # again (a lost reply); any other token is stale. Nothing changes.
                    assert outcome == (done[1] if done and done[0] == c.token else "stale")
                    continue
                if kind == "ack":
                    assert outcome == "succeeded"
                    j.status, j.token = "succeeded", None
                else:
                    j.failures += 1
                    j.token = None
                    if j.failures <= j.retries:
                        assert outcome == "retry"
                        j.status = "delayed"
                        model.retry_due.append(c.id)
                    else:
                        assert outcome == "dead"
                        j.status = "dead"
                j.done = (c.token, outcome)

        # Nothing lost, nothing duplicated: every job is in exactly one status set, the
        # one the model says, and its record agrees.
        model.housekeep()
        stats = q.stats()  # runs the same housekeeping on the server
        by_status: dict[str, list[str]] = {}
        for i, j in model.jobs.items():
            by_status.setdefault(j.status, []).append(i)
        seen: list[str] = []
        for status, n in stats.items():
            ids = q.job_ids(status)
            assert ids == sorted(by_status.get(status, [])), status
            assert len(ids) == n
            seen += ids
        assert sorted(seen) == sorted(pushed)
        records = {r["id"]: r for r in q.jobs()}
        assert len(records) == len(pushed)
        for i, j in model.jobs.items():
            assert (records[i]["status"], records[i]["attempts"]) == (j.status, j.attempts)

        # Drain what is left, one at a time across both pools: the model's order.
        expected_rest = model.claim(len(pushed) + 1, list(POOLS))
        got: list[str] = []
        while True:
            _, claimed = claim(q, "drain", 1, list(POOLS), 60.0)
            if not claimed:
                break
            got.append(claimed[0].id)
        assert got == expected_rest
    finally:
        q.close()
