"""Replicated deployments for the tests, made of Debian's ``redis-server`` and
``redis-sentinel`` on free loopback ports, each in a temporary folder and stopped by pid:

* ``Cluster``: a Redis Cluster of 3 masters and 3 replicas (``redis-cli --cluster
  create``), ``cluster-require-full-coverage no`` so queues on the other masters keep
  working while one master fails over;
* ``SentinelGroup``: a primary, a replica and three sentinels watching them.

A node can be killed (SIGKILL: a crash) and started again on its port and folder, where
it rejoins as a replica of whoever took over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from fifoflow import keys


def have(*programs: str) -> str | None:
    """None, or why a test of these programs must be skipped."""
    missing = [p for p in programs if shutil.which(p) is None]
    return (
        f"{', '.join(missing)} not installed (Debian: apt-get install redis-server redis-sentinel)"
        if missing
        else None
    )


def free_ports(n: int, bus: bool = False) -> list[int]:
    """``n`` free loopback ports (with ``bus``: each one's port + 10000 free too, the
    cluster bus). Held open together while probing, so they differ."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = int(s.getsockname()[1])
            if bus:
                if port + 10000 > 65535:
                    continue
                b = socket.socket()
                try:
                    b.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                finally:
                    b.close()
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(
        f"{what}: not within {timeout}s" + (f" (last error: {last})" if last else "")
    )


class Node:
    """One redis-server (or redis-sentinel) process on a loopback port, in its own folder."""

    def __init__(self, home: Path, port: int, args: Sequence[str], program: str = "redis-server"):
        self.home, self.port, self.args, self.program = home, port, list(args), program
        self.home.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.home / "log.txt", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [self.program, *self.args],
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def client(self, **kw: Any) -> redis.Redis:
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **kw)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def ping(self) -> bool:
        c = self.client(socket_timeout=1)
        try:
            return bool(c.ping())
        finally:
            c.close()


def _server_args(port: int, *extra: str) -> list[str]:
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", ".", "--save", "",
        "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning", *extra,
    ]  # fmt: skip


class Cluster:
    """3 masters + 3 replicas, on free loopback ports."""

    def __init__(self, node_timeout_ms: int = 2000, masters: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ffc-", dir="/tmp"))
        self.nodes: list[Node] = []
        self.node_timeout_ms = node_timeout_ms
        try:
            self._create(masters)
        except BaseException:
            self.close()
            raise

    def _create(self, masters: int) -> None:
        ports = free_ports(2 * masters, bus=True)
        for p in ports:
            args = _server_args(
                p,
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",
                "--cluster-replica-validity-factor", "0",
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            )  # fmt: skip
            self.nodes.append(Node(self.root / str(p), p, args))
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            wait_until(n.ping, 20, f"cluster node {n.port} answers")
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}\n{out.stderr}")
        self.wait_healthy()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def slots_map(self) -> dict[int, tuple[int, list[int]]]:
        """From any live node: first slot of each range -> (master port, replica ports)."""
        for n in self.nodes:
            if not n.alive():
                continue
            c = n.client()
            try:
                ranges = c.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            finally:
                c.close()
            return {int(r[0]): (int(r[2][1]), [int(x[1]) for x in r[3:]]) for r in ranges}
        raise AssertionError("no cluster node answers")

    def masters(self) -> list[int]:
        return sorted({m for m, _ in self.slots_map().values()})

    def master_of(self, queue: str) -> int:
        """The port of the master that holds the queue's slot now."""
        c = self._any_client()
        try:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", keys.prefix(queue)))
            for r in c.execute_command("CLUSTER", "SLOTS"):
                if int(r[0]) <= slot <= int(r[1]):
                    return int(r[2][1])
        finally:
            c.close()
        raise AssertionError(f"slot of {queue} not covered")

    def _any_client(self) -> redis.Redis:
        for n in self.nodes:
            if n.alive():
                return n.client()
        raise AssertionError("no cluster node alive")

    def healthy(self) -> bool:
        """Every live node: cluster state ok, sees every node connected and none failing;
        and as many masters serve slots as the cluster was made with."""
        live = [n for n in self.nodes if n.alive()]
        for n in live:
            c = n.client(socket_timeout=2)
            try:
                if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                    return False
                lines = [
                    ln.split()
                    for ln in str(c.execute_command("CLUSTER", "NODES")).splitlines()
                    if ln.strip()
                ]
                if len(lines) < len(self.nodes):
                    return False
                for ln in lines:
                    flags, link = ln[2], ln[7]
                    if "fail" in flags or "handshake" in flags or "noaddr" in flags:
                        return False
                    if link != "connected" and "myself" not in flags:
                        return False
            finally:
                c.close()
        return len(self.masters()) == len(self.nodes) // 2

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_until(
            self.healthy, timeout, "cluster healthy (every slot served, every node connected)", 0.2
        )

    def queues_on_every_master(self, per_master: int, prefix: str) -> list[str]:
        """Queue names whose slots spread over the masters: ``per_master`` on each."""
        masters = self.masters()
        ranges = self.slots_map()
        found: dict[int, list[str]] = {m: [] for m in masters}
        from redis.crc import key_slot

        i = 0
        while any(len(v) < per_master for v in found.values()):
            name = f"{prefix}{i}"
            i += 1
            slot = key_slot(keys.prefix(name).encode())
            start = max(s for s in ranges if s <= slot)
            master = ranges[start][0]
            if len(found[master]) < per_master:
                found[master].append(name)
        return [q for m in masters for q in found[m]]

    def kill(self, port: int) -> None:
        self.node(port).kill()

    def restart(self, port: int) -> None:
        """Start a killed node again on its port and folder (it keeps its nodes.conf and
        rejoins as a replica of the node that took over)."""
        node = self.node(port)
        node.start()
        wait_until(node.ping, 20, f"cluster node {port} answers again")

    def close(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class SentinelGroup:
    """A primary, a replica and three sentinels (quorum 2) watching service ``SERVICE``."""

    SERVICE = "ffmain"

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ffs-", dir="/tmp"))
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []
        try:
            self._create(down_after_ms)
        except BaseException:
            self.close()
            raise

    def _create(self, down_after_ms: int) -> None:
        p0, p1, *sports = free_ports(5)
        self.servers = [
            Node(self.root / "a", p0, _server_args(p0, "--repl-diskless-sync", "yes")),
            Node(
                self.root / "b",
                p1,
                _server_args(p1, "--replicaof", "127.0.0.1", str(p0)),
            ),
        ]
        for s in self.servers:
            s.start()
        for s in self.servers:
            wait_until(s.ping, 20, f"server {s.port} answers")
        wait_until(self._replica_synced, 30, "replica in sync")
        for sp in sports:
            home = self.root / f"s{sp}"
            home.mkdir()
            (home / "sentinel.conf").write_text(
                f"port {sp}\nbind 127.0.0.1\nprotected-mode no\ndir {home}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {p0} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            node = Node(home, sp, [str(home / "sentinel.conf")], program="redis-sentinel")
            self.sentinels.append(node)
            node.start()
        for s in self.sentinels:
            wait_until(s.ping, 20, f"sentinel {s.port} answers")
        wait_until(
            self._sentinels_agree, 30, "sentinels see the primary, its replica and each other"
        )

    def _replica_synced(self) -> bool:
        c = self.servers[0].client()
        try:
            info = c.info("replication")
            return int(info.get("connected_slaves", 0)) >= 1 and "online" in str(
                info.get("slave0", "")
            )
        finally:
            c.close()

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            c = s.client()
            try:
                m = c.execute_command("SENTINEL", "MASTER", self.SERVICE)
                info = dict(zip(m[::2], m[1::2], strict=True)) if isinstance(m, list) else m
                if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                    return False
            finally:
                c.close()
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}"

    def primary_port(self) -> int:
        for s in self.sentinels:
            if not s.alive():
                continue
            c = s.client()
            try:
                _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
                return int(port)
            except redis.RedisError:
                continue
            finally:
                c.close()
        raise AssertionError("no sentinel answers")

    def server(self, port: int) -> Node:
        return next(s for s in self.servers if s.port == port)

    def close(self) -> None:
        for n in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                n.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def pids_alive(pids: Sequence[int]) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            alive.append(pid)
    return alive
