"""Resource-aware claims against a reference model: a hypothesis state machine pushes jobs
that need GPUs, CPUs and memory, claims for workers of different sizes, completes and
releases jobs, all through the real Lua scripts on the embedded Valkey, and after each
step checks: no resource is oversubscribed (and GPU ids are never shared); among jobs
that fit, start order is FIFO (a job is passed over only behind a head that cannot
start anywhere); the blocked head's reservation is never delayed by a backfilled job;
nothing is lost. Each claim's picks must also equal the reference model's."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fifoflow import Queue
from fifoflow.records import ClaimRequest, Outcome, nonce
from fifoflow.resources import Capacity

pytestmark = pytest.mark.timeout(180)

EPS = 1e-9
#: Examples the state machine ran (printed, and checked to be more than none).
RUNS = {"examples": 0, "steps": 0}
#: The workers of every example: GPU ids, cpu, mem_gb, slots.
WORKERS = {
    "big": (("0", "1", "2", "3"), 8.0, 32.0, 6),
    "small": (("a", "b"), 4.0, 16.0, 4),
}
LEASE = 3600.0


def need_of(resources: dict[str, float]) -> dict[str, float]:
    return {**resources, "slots": 1}


def fits(need: dict[str, float], free: dict[str, float]) -> bool:
    return all(v <= 0 or free.get(r, 0) + EPS >= v for r, v in need.items())


@dataclass
class MJob:
    id: str
    need: dict[str, float]
    expected: float | None
    worker: str = ""
    started: float = 0.0
    gpu_ids: list[str] = field(default_factory=list)
    claimed: Any = None

    def ends(self, now: float) -> float | None:
        return None if self.expected is None else max(self.started + self.expected, now)


class Model:
    """The reference: the claim rule of docs/resources.md written plainly in Python."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.cap = {
            n: {"gpu": float(len(g)), "cpu": c, "mem_gb": m, "slots": float(s)}
            for n, (g, c, m, s) in WORKERS.items()
        }
        self.ids = {n: list(g) for n, (g, _, _, _) in WORKERS.items()}
        self.ready: list[MJob] = []  # in line order (ids sort by rank)
        self.running: dict[str, MJob] = {}

    def free(self, w: str) -> dict[str, float]:
        free = dict(self.cap[w])
        for j in self.running.values():
            if j.worker == w:
                for r, v in j.need.items():
                    free[r] = free.get(r, 0) - v
        return free

    def free_ids(self, w: str) -> list[str]:
        used = {g for j in self.running.values() if j.worker == w for g in j.gpu_ids}
        return [g for g in self.ids[w] if g not in used]

    def reserve(self, need: dict[str, float], now: float) -> dict[str, Any] | None:
        best = unknown = None
        for w in WORKERS:
            if not fits(need, self.cap[w]):
                continue
            mine = [j for j in self.running.values() if j.worker == w]
            ends = sorted(
                ((e, j) for j in mine if (e := j.ends(now)) is not None), key=lambda t: t[0]
            )
            free, shadow = self.free(w), None
            for e, j in ends:
                if shadow is not None and e > shadow:
                    break
                for r, v in j.need.items():
                    free[r] = free.get(r, 0) + v
                if shadow is None and fits(need, free):
                    shadow = e
            if shadow is not None and (best is None or shadow < best["shadow"]):
                extra = {r: free.get(r, 0) - need.get(r, 0) for r in set(free) | set(need)}
                best = {"w": w, "shadow": shadow, "extra": extra}
            elif shadow is None and unknown is None:
                unknown = {"w": w, "shadow": None, "extra": {}}
        return best or unknown

    def pick(self, me: str, n: int, now: float) -> tuple[list[MJob], dict[str, Any] | None]:
        """The jobs worker ``me`` starts now (in order), and the blocked head's reservation."""
        free = {w: self.free(w) for w in WORKERS}
        ids = self.free_ids(me)
        picked: list[MJob] = []
        head: dict[str, Any] | None = None
        for j in list(self.ready):
            if len(picked) >= n:
                break
            ok = fits(j.need, free[me])
            if ok and head is not None:
                if self.strict:
                    break
                if head["w"] == me:
                    if (
                        head["shadow"] is not None
                        and j.expected is not None
                        and now + j.expected <= head["shadow"] + EPS
                    ):
                        ok = True
                    elif fits(j.need, head["extra"]):
                        for r, v in j.need.items():
                            head["extra"][r] = head["extra"].get(r, 0) - v
                    else:
                        ok = False
            if ok:
                for r, v in j.need.items():
                    free[me][r] = free[me].get(r, 0) - v
                j.gpu_ids = [ids.pop(0) for _ in range(int(j.need.get("gpu", 0)))]
                picked.append(j)
                # later reservations in this call see it running from now
                j.worker, j.started = me, now
                self.running[j.id] = j
                self.ready.remove(j)
            elif head is None:
                elsewhere = any(fits(j.need, free[w]) for w in WORKERS if w != me)
                if not elsewhere:
                    head = self.reserve(j.need, now)
                    if head is not None:
                        head["job"] = j.id
                        if self.strict:
                            break
        return picked, head

    def blocked_head(self) -> MJob | None:
        """The first ready job that fits no worker's free capacity but some capacity."""
        free = {w: self.free(w) for w in WORKERS}
        for j in self.ready:
            if any(fits(j.need, free[w]) for w in WORKERS):
                continue
            if any(fits(j.need, self.cap[w]) for w in WORKERS):
                return j
        return None


class ResourceMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.q = Queue("rm-" + uuid.uuid4().hex[:10], url=self.url)
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        self.model = Model(False)
        self.pushed: list[str] = []
        self.done: set[str] = set()
        #: The blocked head's first reservation: (job id, worker, shadow time).
        self.reservation: tuple[str, str, float] | None = None

    @initialize(strict=st.booleans())
    def workers(self, strict: bool) -> None:
        RUNS["examples"] += 1
        self.model.strict = strict
        for name, (gpus, cpu, mem, slots) in WORKERS.items():
            cap = Capacity(gpus, {"cpu": cpu, "mem_gb": mem})
            self.q.broker.register_capacity(
                self.q.name, name, cap, slots, ["default"], f"host-{name}", strict, LEASE
            )

    def now(self) -> float:
        s, us = self.client.time()
        return float(s) + us / 1e6

    @rule(
        gpu=st.sampled_from([0, 0, 1, 1, 2, 4, 5]),
        cpu=st.sampled_from([0, 1, 2, 4]),
        mem=st.sampled_from([0, 0, 8, 16]),
        expected=st.sampled_from([None, 1000.0, 2000.0, 3000.0, 5000.0]),
    )
    def push(self, gpu: int, cpu: int, mem: int, expected: float | None) -> None:
        res = {k: v for k, v in (("gpu", gpu), ("cpu", cpu), ("mem_gb", mem)) if v}
        job = self.q.push("m:f", {}, resources=res, expected_seconds=expected)
        self.pushed.append(job.id)
        self.model.ready.append(MJob(job.id, need_of(res), expected))
        self.model.ready.sort(key=lambda j: j.id)

    @rule(worker=st.sampled_from(sorted(WORKERS)), n=st.integers(1, 4))
    def claim(self, worker: str, n: int) -> None:
        RUNS["steps"] += 1
        before_ready = [j.id for j in self.model.ready]
        free_before = self.model.free(worker)
        req = ClaimRequest(worker, n, ["default"], LEASE, nonce(), resources=True)
        got = self.q.broker.claim(self.q.name, req).jobs
        started = {
            j.id: float(self.client.hget(f"ff:{{{self.q.name}}}:job:{j.id}", "started_at") or 0)
            for j in got
        }
        now = next(iter(started.values())) if started else self.now()
        # The model's prediction, on a copy: the state the invariants check is the real one.
        picked, head = copy.deepcopy(self.model).pick(worker, n, now)
        assert [j.id for j in got] == [j.id for j in picked], (before_ready, head)
        for real, mine in zip(got, picked, strict=True):
            alloc = json.loads(real.alloc)
            assert alloc.get("gpu_ids", []) == mine.gpu_ids
        for real in got:
            j = next(x for x in self.model.ready if x.id == real.id)
            alloc = json.loads(real.alloc)
            assert alloc["need"] == j.need
            self.model.ready.remove(j)
            j.worker, j.started, j.claimed = worker, started[real.id], real
            j.gpu_ids = list(alloc.get("gpu_ids", []))
            self.model.running[j.id] = j
        # FIFO among jobs that fit: a job passed over that fit at its turn sits behind a
        # head that could start on no worker.
        taken = {j.id for j in got}
        if self.reservation is not None and any(t < self.reservation[0] for t in taken):
            self.reservation = None  # a job ahead of the head started: it may go first
        free = dict(free_before)
        blocked = self._blocked_before(before_ready, taken, worker)
        for jid in before_ready:
            j = self.model.running.get(jid) or next(x for x in self.model.ready if x.id == jid)
            if jid in taken:
                for r, v in j.need.items():
                    free[r] = free.get(r, 0) - v
            elif fits(j.need, free) and any(t > jid for t in taken):
                assert blocked is not None and blocked < jid, (jid, taken)

    def _blocked_before(self, line: list[str], taken: set[str], worker: str) -> str | None:
        """The first job of ``line`` that fit no worker's free capacity at the claim."""
        free = {w: self.model.free(w) for w in WORKERS}
        for t in taken:  # undo this claim's picks: the state the claim saw
            j = self.model.running[t]
            for r, v in j.need.items():
                free[worker][r] = free[worker].get(r, 0) + v
        for jid in line:
            j = self.model.running.get(jid) or next(x for x in self.model.ready if x.id == jid)
            if jid in taken:
                for r, v in j.need.items():
                    free[worker][r] = free[worker].get(r, 0) - v
                continue
            if not any(fits(j.need, free[w]) for w in WORKERS) and any(
                fits(j.need, self.model.cap[w]) for w in WORKERS
            ):
                return jid
        return None

    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        if not self.model.running:
            return
        jid = data.draw(st.sampled_from(sorted(self.model.running)))
        j = self.model.running.pop(jid)
        if ok:
            reply = self.q.broker.complete(j.claimed, Outcome("ok", "null"))
            assert reply.outcome == "succeeded"
            self.done.add(jid)
        else:  # released: back to its place in line
            assert self.q.broker.release(self.q.name, [j.claimed]) == 1
            j.worker, j.gpu_ids = "", []
            if self.reservation is not None and jid < self.reservation[0]:
                self.reservation = None  # back in line ahead of the head
            self.model.ready.append(j)
            self.model.ready.sort(key=lambda x: x.id)

    @invariant()
    def nothing_oversubscribed(self) -> None:
        for w, cap in self.model.cap.items():
            free = self.model.free(w)
            assert all(free.get(r, 0) >= -EPS for r in cap), (w, free)
            ids = [g for j in self.model.running.values() if j.worker == w for g in j.gpu_ids]
            assert len(ids) == len(set(ids)) and set(ids) <= set(self.model.ids[w])

    @invariant()
    def nothing_lost(self) -> None:
        p = f"ff:{{{self.q.name}}}:"
        ready = set(self.client.zrange(p + "ready:default", 0, -1))
        running = set(self.client.zrange(p + "running", 0, -1))
        done = set(self.client.zrange(p + "succeeded", 0, -1))
        assert ready | running | done == set(self.pushed)
        assert len(ready) + len(running) + len(done) == len(self.pushed)
        assert ready == {j.id for j in self.model.ready}
        assert running == set(self.model.running)

    @invariant()
    def head_reservation_kept(self) -> None:
        head = self.model.blocked_head()
        if head is None:
            self.reservation = None
            return
        now = self.now()
        current = self.model.reserve(head.need, now)
        if self.reservation is None or self.reservation[0] != head.id:
            if current is None or current["shadow"] is None:
                self.reservation = None
                return
            self.reservation = (head.id, current["w"], current["shadow"])
            return
        # Backfilled jobs never push the head's earliest start past its first reservation.
        _, w, shadow = self.reservation
        assert current is not None and current["shadow"] is not None, (head, w, shadow)
        assert current["shadow"] <= shadow + EPS, (head, w, shadow, current)

    def teardown(self) -> None:
        self.q.close()
        self.client.close()


def test_resource_claims_match_the_model(url: str) -> None:
    ResourceMachine.url = url
    RUNS.update(examples=0, steps=0)
    run_state_machine_as_test(
        ResourceMachine,
        settings=settings(
            max_examples=200,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"\nresource state machine: {RUNS['examples']} examples, {RUNS['steps']} claims")
    assert RUNS["examples"] >= 10
