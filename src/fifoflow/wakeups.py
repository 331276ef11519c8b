"""The dispatcher's idle wait: ``BLPOP`` on the wake lists of every queue and pool the
worker serves, on connections of its own (a ``Lane``).

On a cluster a ``BLPOP`` can wait only on keys of one hash slot, and a script pipelined
behind it runs on that slot's node. So the wake lists are grouped: one group on a single
server or under Sentinel, one per queue on a cluster (a queue is one slot), each group on
a connection of its own. The first queue's group gets its ``BLPOP`` with the first
queue's claim pipelined behind it: a push there reaches an idle slot in one server hop.
Every other group gets a plain ``BLPOP``, sent at the same time; the first reply from any
of them ends the wait: the others are ended with ``CLIENT UNBLOCK`` on their nodes and
read, and the tokens they took are returned, so the dispatcher claims queue by queue as
usual (two hops for a push to a queue of another group) and hands back the tokens of
queues it did not claim from. A node that cannot be reached is left out of a wait (noted
once per episode, tried again within a second): a failing-over master holds up none of
the others.
"""

from __future__ import annotations

import contextlib
import select
from typing import TYPE_CHECKING, Any

import redis

from . import keys
from .records import Claim, ClaimRequest
from .resilience import RETRYABLE

if TYPE_CHECKING:
    from .worker import Worker

#: Longest wait while a node of the worker's queues cannot be reached (it is tried again).
RETRY_NODE = 1.0


class Wakeups:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.lane = worker.broker.lane(per_slot=True)
        #: The lane's connections this wait watches: id -> (the connection, a queue on its
        #: node, its CLIENT ID, which UNBLOCK names; refreshed on every reconnect).
        self._known: dict[int, tuple[redis.Connection, str, int | None]] = {}

    # -- connections ----------------------------------------------------------------------

    def _conn(self, queue: str) -> redis.Connection:
        conn = self.lane.get(queue)
        if id(conn) not in self._known:
            held = {id(c) for c in self.lane.held().values()}
            for key, (old, _, _) in list(self._known.items()):
                if key not in held:  # replaced after an error (and back in its pool)
                    old.deregister_connect_callback(self._connected)  # type: ignore[no-untyped-call]
                    del self._known[key]
            self._known[id(conn)] = (conn, queue, None)
            conn.register_connect_callback(self._connected)  # type: ignore[no-untyped-call]
            self._connected(conn)
        return conn

    def _connected(self, conn: Any) -> None:
        # A (re)connect gets a new id; CLIENT UNBLOCK must name the new one.
        conn.send_command("CLIENT", "ID")
        client_id = int(conn.read_response())
        _, queue, _ = self._known[id(conn)]
        self._known[id(conn)] = (conn, queue, client_id)

    def groups(self) -> dict[str, tuple[str, list[str]]]:
        """connection -> (a queue, the wake lists it waits on); the first queue's first.
        One group on a single server; one per queue on a cluster (one hash slot each)."""
        w = self.w
        out: dict[str, tuple[str, list[str]]] = {}
        for q in w.queues:
            group = self.lane.key(q)
            out.setdefault(group, (q, []))[1].extend(keys.wake(q, p) for p in w.pools)
        return out

    # -- waiting --------------------------------------------------------------------------

    def wait(self, timeout: float, req: ClaimRequest) -> tuple[list[str], Claim]:
        """Wait up to ``timeout`` seconds for a wake token, with a claim of ``req`` for the
        first queue behind the wait on its node. Returns the wake lists tokens came from
        and that claim."""
        w = self.w
        q0 = w.queues[0]
        self._conn(q0)
        groups = list(self.groups().values())
        popped: list[str] = []
        others: list[tuple[str, redis.Connection]] = []
        for queue, wake_keys in groups[1:]:
            try:
                conn = self._conn(queue)
                conn.send_command("BLPOP", *wake_keys, timeout)  # type: ignore[no-untyped-call]
                others.append((queue, conn))
            except RETRYABLE as e:
                self._broken(queue, e)
                timeout = min(timeout, RETRY_NODE)

        def meanwhile() -> None:
            if others:
                self._first_reply(q0, others, popped, timeout)

        try:
            woke, claim = w.broker.wait_and_claim(
                self.lane, groups[0][1], timeout, q0, req, meanwhile
            )
        finally:
            self._finish(others, popped)
        if woke is not None:
            popped.insert(0, woke)
        return popped, claim

    def _first_reply(
        self,
        q0: str,
        others: list[tuple[str, redis.Connection]],
        popped: list[str],
        timeout: float,
    ) -> None:
        """Until the first node answers: when another node does first, its reply is read
        and the first queue's wait is ended (its claim then runs)."""
        main = self.lane.get(q0)
        main_sock = getattr(main, "_sock", None)
        socks = {getattr(c, "_sock", None): i for i, (_, c) in enumerate(others)}
        ready, _, _ = select.select([main_sock, *(s for s in socks if s)], [], [], timeout + 1)
        if main_sock in ready or not ready:
            return
        done = sorted((socks[s] for s in ready if s in socks), reverse=True)
        for i in done:
            queue, conn = others.pop(i)
            self._read(queue, conn, popped)
        self._unblock(main)

    def _finish(self, others: list[tuple[str, redis.Connection]], popped: list[str]) -> None:
        """End the waits still under way on the other nodes and read their replies."""
        for _, conn in others:
            self._unblock(conn)
        for queue, conn in others:
            self._read(queue, conn, popped)
        others.clear()

    def _read(self, queue: str, conn: redis.Connection, popped: list[str]) -> None:
        try:
            reply = conn.read_response()
        except RETRYABLE as e:
            self._broken(queue, e, conn)
            return
        if isinstance(reply, list | tuple) and reply:
            popped.append(str(reply[0]))

    def _broken(self, queue: str, error: BaseException, conn: Any = None) -> None:
        """A node of the worker's queues failed: noted, routing refreshed, its
        connection closed (the next wait takes a fresh one)."""
        self.w.health.failed(error)
        self.w.broker.topology.failed(queue, error)
        if conn is not None:
            self.lane.broken(conn)

    def _unblock(self, conn: redis.Connection) -> None:
        found = self._known.get(id(conn))
        if found is not None:
            self._send_unblock(found[1], found[2])

    def _send_unblock(self, queue: str, client_id: int | None) -> None:
        if client_id is not None:
            with contextlib.suppress(*RETRYABLE):
                self.w.broker.topology.node_client(queue).client_unblock(client_id)

    def unblock(self) -> None:
        """End every wait under way now (thread-safe: a stop)."""
        for _, queue, client_id in list(self._known.values()):
            self._send_unblock(queue, client_id)

    def close(self) -> None:
        self.lane.close()
