"""The broker's schedules side: schedules kept in the server (plain commands in
transactions: a schedule hash and the queue's set of names, plus ``ff:schedules``, the
queues that have any), and ``once.lua``, the one script that pushes a schedule's ticks or
a backfill's intervals, never twice."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from . import keys
from .keys import Key, ScheduleField
from .records import Pushed, PushSpec, nonce
from .settings import Settings

#: Jobs per call of once.lua.
ONCE_BATCH = 1000

FireOutcome = Literal["ok", "stale", "paused", "gone"]


@dataclass(frozen=True)
class Fired:
    """The reply of one schedule call: ``ok`` (the ticks were handled, ``pushed`` says
    how), or nothing changed: ``stale`` (another scheduler moved the watermark first),
    ``paused``, ``gone`` (removed)."""

    outcome: FireOutcome
    pushed: list[Pushed] = field(default_factory=list)


def _schedule_key(queue: str, name: str) -> str:
    return keys.queue_key(queue, Key.SCHEDULE) + name


class Scheduling:
    client: redis.Redis
    settings: Settings
    _script: Callable[..., tuple[list[Any], Any]]
    _register_queue: Callable[[str], None]
    _pushed: Callable[[str, Sequence[str]], list[Pushed]]

    def _once_pushed(self, queue: str, reply: Sequence[str]) -> list[Pushed]:
        """once.lua's reply: 'OK', then per job its id, new ('1'/'0') and status (not the
        push's runs of consecutive ids); a refusal ('FULL' ...) as a push's."""
        if reply[0] != "OK":
            return self._pushed(queue, reply)
        return [
            Pushed(reply[i], reply[i + 1] == "1", reply[i + 2]) for i in range(1, len(reply), 3)
        ]

    def server_time(self) -> float:
        """The server's clock (Unix seconds): the one clock every scheduler agrees on."""
        secs, micros = self.client.time()
        return secs + micros / 1e6

    # -- keeping schedules ---------------------------------------------------------------

    def add_schedule(self, queue: str, name: str, spec_json: str) -> bool:
        """A new schedule, its watermark now (no earlier tick fires); False if the queue
        already has a schedule of that name (nothing changed)."""
        key = _schedule_key(queue, name)
        self.client.sadd(keys.SCHEDULES, queue)

        added: list[str] = []

        def add(pipe: Any) -> None:
            added.clear()
            if pipe.exists(key):
                return
            now = self.server_time()
            pipe.multi()
            f = ScheduleField
            pipe.hset(
                key,
                mapping={
                    f.SPEC: spec_json,
                    f.LAST: str(math.floor(now)),
                    f.PAUSED: "0",
                    f.CREATED_AT: repr(now),
                    f.FIRED: "0",
                    f.SKIPPED: "0",
                },
            )
            pipe.sadd(keys.queue_key(queue, Key.SCHEDULES), name)
            added.append(name)

        self.client.transaction(add, key)
        return bool(added)

    def schedule(self, queue: str, name: str) -> dict[str, str] | None:
        raw = cast(dict[str, str], self.client.hgetall(_schedule_key(queue, name)))
        return raw if raw.get(ScheduleField.SPEC) else None

    def schedules(self, queue: str) -> dict[str, dict[str, str]]:
        """Every schedule of the queue by name: its raw hash."""
        names = sorted(cast(set[str], self.client.smembers(keys.queue_key(queue, Key.SCHEDULES))))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(_schedule_key(queue, name))
        return {
            n: raw
            for n, raw in zip(names, pipe.execute(), strict=True)
            if raw.get(ScheduleField.SPEC)
        }

    def schedule_queues(self) -> list[str]:
        """Queues that have (or had) schedules."""
        return sorted(cast(set[str], self.client.smembers(keys.SCHEDULES)))

    def pause_schedule(self, queue: str, name: str, paused: bool) -> bool:
        """Pause, or resume: a resumed schedule's watermark moves to now, so ticks due
        while it was paused never fire. False if there is no such schedule."""
        key = _schedule_key(queue, name)

        found: list[str] = []

        def change(pipe: Any) -> None:
            found.clear()
            raw = pipe.hmget(key, ScheduleField.SPEC, ScheduleField.LAST, ScheduleField.PAUSED)
            if raw[0] is None:
                return
            fields = {ScheduleField.PAUSED: "1" if paused else "0"}
            if not paused and raw[2] == "1":
                last = max(int(raw[1] or 0), math.floor(self.server_time()))
                fields[ScheduleField.LAST] = str(last)
            pipe.multi()
            pipe.hset(key, mapping=fields)
            found.append(name)

        self.client.transaction(change, key)
        return bool(found)

    def remove_schedule(self, queue: str, name: str) -> bool:
        names = keys.queue_key(queue, Key.SCHEDULES)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(_schedule_key(queue, name))
        pipe.srem(names, name)
        removed, _ = pipe.execute()
        return bool(removed)

    # -- pushing once --------------------------------------------------------------------

    @staticmethod
    def _once_args(
        queue: str,
        spec: PushSpec,
        name: str,
        fifth: str,
        tail: list[str],
        jobs: Sequence[tuple[str, str]],
    ) -> list[str]:
        """once.lua's ARGV (see its header): the spec's length travels with it."""
        push = spec.args()
        head = [nonce(), "0", keys.id_suffix(queue), name, fifth, *tail, str(len(push))]
        return [*head, *push, *(x for pair in jobs for x in pair)]

    def fire(
        self,
        queue: str,
        name: str,
        spec: PushSpec,
        jobs: Sequence[tuple[str, str]],
        *,
        expected: int,
        watermark: int,
        skipped: int,
        last_fired: int | None,
    ) -> Fired:
        """Push a schedule's ticks (``jobs``: params JSON, key) and move its watermark from
        ``expected`` to ``watermark``, in one step, unless another call moved it first."""
        self._register_queue(queue)
        tail = [str(watermark), str(skipped), "" if last_fired is None else str(last_fired)]
        args = self._once_args(queue, spec, name, str(expected), tail, jobs)
        _, reply = self._script("once", queue, args, resend_at=1)
        if reply[0] in ("STALE", "PAUSED", "GONE"):
            return Fired(cast(FireOutcome, reply[0].lower()))
        return Fired("ok", self._once_pushed(queue, reply))

    def push_once(
        self,
        queue: str,
        spec: PushSpec,
        jobs: Sequence[tuple[str, str]],
        on_batch: Callable[[int], object] | None = None,
    ) -> list[Pushed]:
        """Push a job per (params JSON, once-key) whose key was never pushed (for
        ``once_ttl_seconds``), oldest first, ``ONCE_BATCH`` a call. Each call stands alone:
        after a failure, a re-run pushes just what is left."""
        self._register_queue(queue)
        out: list[Pushed] = []
        ttl = str(self.settings.once_ttl_seconds)
        for start in range(0, len(jobs), ONCE_BATCH):
            chunk = jobs[start : start + ONCE_BATCH]
            args = self._once_args(queue, spec, "", ttl, ["", "", ""], chunk)
            _, reply = self._script("once", queue, args, resend_at=1)
            out += self._once_pushed(queue, reply)
            if on_batch is not None:
                on_batch(len(chunk))
        return out

    def once_used(self, queue: str, once_keys: Sequence[str]) -> dict[str, bool]:
        """Whether each once-key was pushed before (a dry run's question)."""
        if not once_keys:
            return {}
        scores = self.client.zmscore(keys.queue_key(queue, Key.ONCE), list(once_keys))
        return {k: s is not None for k, s in zip(once_keys, cast(list[Any], scores), strict=True)}
