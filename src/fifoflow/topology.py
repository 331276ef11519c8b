"""Where a queue's keys live: one server, the primary that Sentinel names, or one node of a
Redis Cluster (every key of queue ``Q`` carries the hash tag ``{Q}``, so a queue is one
slot, on one master, and many queues spread over the masters).

``client_from_url`` turns ``redis+cluster://[user:pass@]host:port[,host:port...]`` into a
``RedisCluster`` and ``redis+sentinel://[user:pass@]host:port[,...]/SERVICE[/DB]`` into a
client of the primary Sentinel names, re-asked on every new connection, so a reconnect
after a failover finds the new primary (``rediss+...``: either over TLS). ``Topology``
routes a queue to the connection pool of the node that holds its slot and refreshes the
routing after MOVED, a lost node, READONLY; ``Lane`` keeps a caller's own connections,
one per node (or per queue); ``ride`` re-sends a plain command through a failover.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.sentinel import Sentinel

from . import keys
from .errors import ConnectionFailed
from .settings import Settings

T = TypeVar("T")

#: Re-sends of a call whose reply may have been lost, and the pause before each.
RESENDS = (0.05, 0.25, 1.0)
CLUSTER = "redis+cluster"
SENTINEL = "redis+sentinel"
#: ``rediss+...``: the same over TLS (``ssl_ca_certs``, ``ssl_cert_reqs``, ``ssl_certfile``
#: and ``ssl_keyfile`` query options as with ``rediss://``).
SCHEMES = (CLUSTER, SENTINEL, "rediss+cluster", "rediss+sentinel")
TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")
#: Errors after which a node's routing may have changed (a failover, a resharding).
REROUTE = (redis.ConnectionError, redis.TimeoutError, MovedError, AskError, redis.ReadOnlyError)
#: Errors that say "not now" during a failover: wait, then send again.
TRANSIENT = (
    *REROUTE,
    redis.exceptions.TryAgainError,
    ClusterDownError,
    redis.exceptions.BusyLoadingError,
)


def resend_pauses(window: float) -> Iterator[float]:
    """Pauses before each re-send: a few quick ones (``window`` 0), or, where a primary
    may fail over (a producer on a cluster or under Sentinel), up to ``window`` seconds."""
    if window <= 0:
        yield from RESENDS
        return
    end, pause = time.monotonic() + window, RESENDS[0]
    while (left := end - time.monotonic()) > 0:
        yield min(pause, left)
        pause = min(pause * 2, 1.0)


def ride(topology: Topology, window: float, call: Callable[[], T]) -> T:
    """A plain idempotent command (not a script), sent again while its node fails over:
    routing refreshed after each error, pauses as ``resend_pauses(window)``."""
    pauses = resend_pauses(window)
    while True:
        try:
            return call()
        except (*TRANSIENT, RedisClusterException) as e:
            topology.failed(None, e)
            pause = next(pauses, None)
            if pause is None:
                raise
            time.sleep(pause)


def replica_wait(settings: Settings) -> tuple[tuple[Any, ...], ...]:
    """What follows a push or a completion in its packet: with durability ``replicated``,
    ``WAIT 1 TIMEOUT_MS`` (it returns once one replica has every write of the connection
    so far); else nothing."""
    if settings.durability != "replicated":
        return ()
    return (("WAIT", 1, max(1, int(settings.replica_timeout * 1000))),)


def replicated_ok(reply: Any) -> bool:
    """WAIT's reply: the number of replicas that have the writes (at least one wanted)."""
    return isinstance(reply, int) and reply >= 1


def _hosts(netloc: str, url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """``[user:pass@]host:port[,host:port...]`` -> (user, password, [(host, port)])."""
    user = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, password = auth.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConnectionFailed(
                f"invalid server URL {_safe(url)!r}: each node must be HOST:PORT, not {part!r}"
            )
        hosts.append((host.strip("[]"), int(port)))
    return user, password, hosts


def _safe(url: str) -> str:
    from .connection import redact

    return redact(url)


def client_from_url(url: str, options: dict[str, Any]) -> Any:
    """A ``RedisCluster`` (``redis+cluster://``) or a Sentinel-managed primary client
    (``redis+sentinel://``), with the connection ``options`` of ``connection.connect``."""
    parts = urlsplit(url)
    user, password, hosts = _hosts(parts.netloc, url)
    query = dict(parse_qsl(parts.query))
    options = {k: v for k, v in options.items() if k != "health_check_interval"}
    if user:
        options["username"] = user
    if password:
        options["password"] = password
    if parts.scheme.startswith("rediss+"):
        options["ssl"] = True
        options.update({k: v for k, v in query.items() if k in TLS_OPTIONS})
    unknown = sorted(set(query) - {*TLS_OPTIONS, "sentinel_password"})
    if unknown:
        raise ConnectionFailed(
            f"invalid server URL {_safe(url)!r}: unknown option(s) {', '.join(unknown)}"
        )
    if parts.scheme.endswith("+cluster"):
        try:
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in hosts],  # type: ignore[no-untyped-call]
                require_full_coverage=False,
                **options,
            )
        except (RedisClusterException, redis.RedisError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConnectionFailed(f"cannot reach the cluster at {_safe(url)}: {msg}") from None
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConnectionFailed(
            f"invalid server URL {_safe(url)!r}: a Sentinel URL ends with /SERVICE (or /SERVICE/DB)"
        )
    sentinel_kwargs: dict[str, Any] = {
        k: options[k]
        for k in ("socket_timeout", "socket_connect_timeout", "ssl", *TLS_OPTIONS)
        if k in options
    }
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)  # type: ignore[no-untyped-call]
    db = int(path[1]) if len(path) == 2 else 0
    return sentinel.master_for(path[0], db=db)  # type: ignore[no-untyped-call]


class Topology:
    """Routes a queue to the connection pool of the node holding its slot."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.sentinel = not self.cluster and hasattr(client.connection_pool, "service_name")
        #: Monotonic time of the last routing change seen (a failover): until it settles,
        #: who is connected where says little.
        self.changed_at = 0.0
        self._slots: dict[str, int] = {}
        self._primaries: frozenset[str] | None = None

    @property
    def replicated(self) -> bool:
        """A deployment that fails over (a cluster, or a primary under Sentinel)."""
        return self.cluster or self.sentinel

    def _node(self, queue: str) -> Any:
        try:
            return self.client.nodes_manager.get_node_from_slot(self._slot(queue))
        except SlotNotCoveredError as e:  # mid-failover: a server error like any other
            raise ClusterDownError(str(e)) from None

    def same_slot(self, a: str, b: str) -> bool:
        """Whether two queues share one hash slot (one script may touch both)."""
        return a == b or (self._slot(a) == self._slot(b))

    def _slot(self, queue: str) -> int:
        slot = self._slots.get(queue)
        if slot is None:
            slot = self._slots[queue] = int(self.client.keyslot(keys.prefix(queue)))
        return slot

    def node(self, queue: str) -> str:
        """The name (``host:port``) of the node holding the queue ('' off a cluster)."""
        return str(self._node(queue).name) if self.cluster else ""

    def pool(self, queue: str) -> redis.ConnectionPool:
        if not self.cluster:
            return cast(redis.ConnectionPool, self.client.connection_pool)
        node = self._node(queue)
        return cast(redis.ConnectionPool, self.client.get_redis_connection(node).connection_pool)

    def node_client(self, queue: str) -> redis.Redis:
        """A plain client of the node holding the queue (the client itself off a cluster)."""
        if not self.cluster:
            return cast(redis.Redis, self.client)
        return cast(redis.Redis, self.client.get_redis_connection(self._node(queue)))

    def primaries(self) -> list[redis.Redis]:
        """A client of every master (one off a cluster): for what must look at each."""
        if not self.cluster:
            return [cast(redis.Redis, self.client)]
        nodes = self.client.get_primaries()
        names = frozenset(n.name for n in nodes)
        if self._primaries is not None and names != self._primaries:
            self.changed_at = time.monotonic()
        self._primaries = names
        return [self.client.get_redis_connection(n) for n in nodes]

    def failed(self, queue: str | None, error: BaseException) -> None:
        """After ``error`` from the queue's node (None: some node): learn where the slots
        live now."""
        if not isinstance(error, REROUTE):
            return
        self.changed_at = time.monotonic()
        if not self.cluster:
            return  # Sentinel: a new connection asks the sentinels again
        with contextlib.suppress(RedisClusterException, redis.RedisError):
            if isinstance(error, MovedError | AskError):
                _refresh(self.client, additional_startup_nodes_info=[(error.host, error.port)])
            elif queue is not None:
                _refresh(self.client, last_failed_node_name=self.node(queue))
            else:
                _refresh(self.client)


def _refresh(client: Any, **hints: Any) -> None:
    """Ask the cluster where its slots live now (``hints``: where to ask first, for the
    redis-py versions whose ``initialize`` takes them; older ones ask every known node)."""
    manager = client.nodes_manager
    try:
        manager.initialize(**hints)
    except TypeError:
        manager.initialize()


class Lane:
    """Connections that one caller keeps for itself (a worker slot's, the dispatcher's
    blocking ones): one per node, taken from that node's pool on first use; with
    ``per_slot``, one per queue on a cluster (a ``BLPOP`` may only name keys of one hash
    slot, so each queue's wait needs its own connection)."""

    def __init__(self, topology: Topology, per_slot: bool = False) -> None:
        self.topology = topology
        self.per_slot = per_slot and topology.cluster
        self._conns: dict[str, tuple[redis.ConnectionPool, redis.Connection]] = {}

    def key(self, queue: str) -> str:
        node = self.topology.node(queue)
        return f"{node}/{queue}" if self.per_slot else node

    def get(self, queue: str) -> redis.Connection:
        node = self.key(queue)
        held = self._conns.get(node)
        if held is None:
            pool = self.topology.pool(queue)
            held = self._conns[node] = (pool, pool.get_connection())
        return held[1]

    def held(self) -> dict[str, redis.Connection]:
        return {node: conn for node, (_, conn) in self._conns.items()}

    def broken(self, conn: redis.Connection) -> None:
        """A connection of this lane failed: closed and given back (the next call takes a
        fresh one, from whichever node then holds its queue)."""
        conn.disconnect()  # type: ignore[no-untyped-call]
        for node, (pool, held) in list(self._conns.items()):
            if held is conn:
                del self._conns[node]
                with contextlib.suppress(Exception):
                    pool.release(conn)

    def close(self) -> None:
        for pool, conn in self._conns.values():
            with contextlib.suppress(Exception):
                conn.disconnect()  # type: ignore[no-untyped-call]
                pool.release(conn)
        self._conns.clear()
