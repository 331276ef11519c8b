"""Fault-making helpers for the fault tests: a private redis-server (TCP and unix socket),
a port where nothing listens, a loopback TCP proxy that drops one chosen reply, and the
server-side faults themselves (read-only flap, busy script, master down, full memory).

Everything here is started by the test that uses it and stopped by pid at teardown; the
proxy's threads are joined when it closes.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from fifoflow import FifoflowError, Queue


def eventually(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False).

    Unlike ``wait_for`` it does not raise, so a test can fail with a message that shows the
    state it found instead of a bare timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DeadPort:
    """A loopback port that is bound but never listens: connections to it are refused, and
    no other process can take it while this object lives (a master that never answers)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._sock.close()


class PrivateRedis:
    """Debian's redis-server for one test: TCP on a free loopback port and a unix socket,
    no persistence. Tests that change server config (REPLICAOF, maxmemory, ...) use one."""

    def __init__(self, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.home = Path(tempfile.mkdtemp(prefix="fff-", dir="/tmp"))
        self.socket = self.home / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        for _ in range(5):  # the free port may be taken between the probe and the bind
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--unixsocket",
                    str(self.socket),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(self.home),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(10):
                return
            self._stop_proc()
        shutil.rmtree(self.home, ignore_errors=True)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        """The unix-socket URL (the quickest)."""
        return f"unix://{self.socket}"

    @property
    def tcp_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=True)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            with contextlib.suppress(redis.RedisError, OSError):
                c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
                try:
                    if c.ping() and self.socket.exists():
                        return True
                finally:
                    c.close()
            time.sleep(0.05)
        return False

    def _stop_proc(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self._stop_proc()
        shutil.rmtree(self.home, ignore_errors=True)


# -- server-side faults ------------------------------------------------------------------------


def read_only_window(client: redis.Redis, seconds: float, master_port: int) -> tuple[float, float]:
    """Make the server a replica of a master that never answers for ``seconds``, then a
    master again. Writes get READONLY; the data set is kept (no sync ever starts); blocked
    clients (BLPOP) are unblocked with an UNBLOCKED error. Returns (start, end) wall times."""
    start = time.time()
    client.execute_command("REPLICAOF", "127.0.0.1", master_port)
    time.sleep(seconds)  # the fault window
    client.execute_command("REPLICAOF", "NO", "ONE")
    return start, time.time()


def master_down_window(
    client: redis.Redis, seconds: float, master_port: int
) -> tuple[float, float]:
    """As ``read_only_window`` with ``replica-serve-stale-data no``: every script and read
    (PING included) gets MASTERDOWN, plain writes READONLY."""
    client.config_set("replica-serve-stale-data", "no")
    try:
        return read_only_window(client, seconds, master_port)
    finally:
        client.config_set("replica-serve-stale-data", "yes")


BUSY_LUA = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1000000
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1000000 - start > tonumber(ARGV[1]) then break end
end
return 1
"""


def busy_window(client: redis.Redis, seconds: float) -> tuple[float, float]:
    """Run a script that busy-loops for ``seconds`` (read-only, so it ends by itself);
    after ``busy-reply-threshold`` (100 ms) every other command gets BUSY. Blocks the
    caller for the window."""
    client.config_set("busy-reply-threshold", 100)
    start = time.time()
    client.eval(BUSY_LUA, 0, str(seconds))
    return start, time.time()


def fill_memory(client: redis.Redis, url: str, filler_queue: str, headroom: int = 512_000) -> int:
    """Fill the server's memory with jobs of another queue, as a busy producer would:
    ``maxmemory`` just above ``used_memory``, then pushes until the server answers OOM.

    A refused command frees its query buffer, so used memory drops back under the limit
    right after the OOM: the limit is then lowered to 1 MB under what is used, so the
    server stays full (every write refused) until ``maxmemory`` is raised again. Returns
    the number of filler jobs queued."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + headroom)
    filler = Queue(filler_queue, url=url)
    pad = "x" * 32_000
    pushed = 0
    try:
        for _ in range(10_000):
            try:
                filler.push("fftest_targets:echo", {"pad": pad})
            except (redis.RedisError, FifoflowError) as e:
                if "OOM" in str(e) or "out of memory" in str(e).lower() or "maxmemory" in str(e):
                    break
                raise
            pushed += 1
        else:
            raise RuntimeError("memory never filled up")
    finally:
        filler.close()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", max(used - 1_000_000, 1))
    return pushed


def free_memory(client: redis.Redis) -> None:
    client.config_set("maxmemory", 0)


# -- a proxy that drops one reply ---------------------------------------------------------------


class _Incomplete(Exception):
    pass


def _line_end(buf: bytes | bytearray, pos: int) -> int:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    return end


def resp_end(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """The end (exclusive) of the RESP2/RESP3 value that starts at ``pos``, or None if the
    buffer does not hold all of it yet."""
    try:
        return _value_end(buf, pos)
    except _Incomplete:
        return None


def _value_end(buf: bytes | bytearray, pos: int) -> int:
    if pos >= len(buf):
        raise _Incomplete
    kind = buf[pos : pos + 1]
    end = _line_end(buf, pos)
    after = end + 2
    if kind in (b"+", b"-", b":", b",", b"_", b"#", b"("):
        return after
    n = int(buf[pos + 1 : end])
    if kind in (b"$", b"!", b"="):
        if n < 0:
            return after
        if len(buf) < after + n + 2:
            raise _Incomplete
        return after + n + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = n * 2 if kind in (b"%", b"|") else n
        for _ in range(max(count, 0)):
            after = _value_end(buf, after)
        if kind == b"|":  # an attribute is followed by the value it annotates
            after = _value_end(buf, after)
        return after
    raise ValueError(f"not RESP: {bytes(buf[pos : pos + 20])!r}")


class DropProxy:
    """A loopback TCP proxy in front of ``upstream`` that forwards everything, except that,
    once armed, it drops exactly one server-to-client reply containing ``needle``.

    Replies are framed (RESP), so only the matching reply goes, never its neighbours in the
    same TCP read. Modes: ``silent`` discards the reply and keeps the connection (the
    client waits for an answer that never comes); ``reset`` discards it and closes the
    client's connection (and the upstream one). ``dropped`` is set once it happened and
    ``dropped_reply`` holds the bytes."""

    MODES = ("silent", "reset")

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._needle: bytes | None = None
        self._mode = "silent"
        self.dropped = threading.Event()
        self.dropped_reply: bytes | None = None
        self.connections = 0
        self._closing = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name="proxy-accept")
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def arm(self, needle: bytes, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        with self._lock:
            self._needle, self._mode = needle, mode

    def close(self) -> None:
        self._closing.set()
        self._accepter.join(5)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _shut(s)
        for t in list(self._threads):
            t.join(5)

    # -- internals ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _shut(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [client, server]
            pair = (client, server)
            for target, name in ((self._upstream_pump, "up"), (self._downstream_pump, "down")):
                t = threading.Thread(target=target, args=pair, name=f"proxy-{name}", daemon=True)
                self._threads.append(t)
                t.start()

    def _upstream_pump(self, client: socket.socket, server: socket.socket) -> None:
        """Client to server: bytes as they come."""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                server.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client)
            _shut(server)

    def _downstream_pump(self, client: socket.socket, server: socket.socket) -> None:
        """Server to client: whole replies, one of which may be dropped."""
        buf = bytearray()
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                buf += data
                out = bytearray()
                pos = 0
                while True:
                    end = resp_end(buf, pos)
                    if end is None:
                        break
                    reply = bytes(buf[pos:end])
                    pos = end
                    if self._take(reply):
                        if self._mode == "reset":
                            if out:
                                client.sendall(out)
                            return  # finally closes both sides
                        continue
                    out += reply
                del buf[:pos]
                if out:
                    client.sendall(out)
        except OSError:
            pass
        finally:
            _shut(client)
            _shut(server)

    def _take(self, reply: bytes) -> bool:
        with self._lock:
            if self._needle is None or self._needle not in reply:
                return False
            self._needle = None
            self.dropped_reply = reply
        self.dropped.set()
        return True


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
