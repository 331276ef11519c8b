"""Real servers for the tests: an embedded Valkey (always) and Debian's redis-server (where
installed), each on a temporary home, stopped by pid at teardown.

Every test gets its own queue name, so tests can share a server and run in parallel
(pytest-xdist gives each process its own servers). FIFOFLOW_HOME, FIFOFLOW_URL and
PREFECT_HOME point at temporary folders for every test: nothing touches ~/.fifoflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fifoflow import Queue, server

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="run the full chaos test (10,000 jobs, 4x4 worker slots, kills every ~2 s); "
        "make chaos",
    )


def _short_tmp(prefix: str) -> Path:
    # unix socket paths must stay short: use /tmp directly, not pytest's deep folders.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


class EmbeddedServer:
    """An embedded Valkey in its own FIFOFLOW_HOME (the production code path)."""

    def __init__(self, appendfsync: str = "everysec") -> None:
        self.home = _short_tmp("ffv-")
        self.url = server.ensure_running(self.home, appendfsync)
        self.pid = server.read_pid(server.Paths(self.home))

    def restart(self) -> None:
        server.stop(self.home)
        self.url = server.ensure_running(self.home)
        self.pid = server.read_pid(server.Paths(self.home))

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                for _ in range(200):
                    os.kill(self.pid, 0)
                    time.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            server.stop(self.home)
        _stop_pid(server.read_pid(server.Paths(self.home)))
        shutil.rmtree(self.home, ignore_errors=True)


class RedisServer:
    """Debian's redis-server on a unix socket and a free loopback port."""

    def __init__(self, *extra: str) -> None:
        self.home = _short_tmp("ffr-")
        self.socket = self.home / "redis.sock"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
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
        self.url = f"unix://{self.socket}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.socket.exists():
                with contextlib.suppress(redis.RedisError):
                    if redis.Redis(unix_socket_path=str(self.socket)).ping():
                        return
            time.sleep(0.05)
        self.close()
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def user_home_untouched() -> Iterator[None]:
    """Fail the session if anything created the user's ~/.fifoflow while tests ran."""
    home = Path.home() / ".fifoflow"
    existed = home.exists()
    yield
    if not existed and home.exists():
        raise AssertionError(f"a test touched {home}: every test must use a temporary home")


@pytest.fixture(scope="session")
def valkey() -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("Debian's redis-server is not installed")
    srv = RedisServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A Redis Cluster of 3 masters + 3 replicas (Debian's redis-server on free loopback
    ports, ``redis-cli --cluster create``), one per test process, stopped by pid."""
    import clusterkit

    why = clusterkit.have("redis-server", "redis-cli")
    if why:
        pytest.skip(why)
    c = clusterkit.Cluster()
    yield c
    c.close()


@pytest.fixture(params=["valkey", "redis", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """The URL of each real server kind in turn: core tests run against a single Valkey, a
    single redis-server and a 6-node Redis Cluster. A test that needs one server (it kills
    it, reads CLIENT LIST) says so with ``@pytest.mark.single_server``."""
    if request.param == "cluster" and request.node.get_closest_marker("single_server"):
        pytest.skip(
            "needs a single server: " + request.node.get_closest_marker("single_server").args[0]
        )
    name = {"valkey": "valkey", "redis": "redis_server", "cluster": "cluster"}[request.param]
    srv = request.getfixturevalue(name)
    return str(srv.url)


@pytest.fixture
def url(valkey: EmbeddedServer) -> str:
    return valkey.url


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test may touch ~/.fifoflow or ~/.prefect."""
    home = tmp_path / "ffhome"
    monkeypatch.setenv("FIFOFLOW_HOME", str(home))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("FIFOFLOW_URL", raising=False)
    monkeypatch.delenv("FIFOFLOW_QUEUE", raising=False)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    return home


@pytest.fixture
def qname() -> str:
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def queue(any_url: str, qname: str) -> Iterator[Queue]:
    q = Queue(qname, url=any_url)
    yield q
    q.close()


@pytest.fixture
def vqueue(url: str, qname: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    """A queue on the embedded Valkey, with FIFOFLOW_URL/QUEUE set for CLIs and workers."""
    monkeypatch.setenv("FIFOFLOW_URL", url)
    monkeypatch.setenv("FIFOFLOW_QUEUE", qname)
    q = Queue(qname, url=url)
    yield q
    q.close()


class Processes:
    """Child processes of one test, killed by pid at teardown whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(args),
            env={**os.environ, **(env or {})},
            stdout=kw.pop("stdout", subprocess.PIPE),
            stderr=kw.pop("stderr", subprocess.PIPE),
            text=True,
            start_new_session=True,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def worker(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        """``fifoflow worker ARGS`` as a real process."""
        return self.start(sys.executable, "-m", "fifoflow", "worker", *args, env=env, **kw)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    yield p
    p.close()


def run_cli(
    *args: str, input: str | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``fifoflow ARGS`` in a real subprocess: exit code, stdout and stderr as a user sees them."""
    return subprocess.run(
        [sys.executable, "-m", "fifoflow", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def blocked_ids(client: redis.Redis) -> set[int]:
    """Ids of the server's clients blocked in a blocking command (an idle worker's wait);
    on a cluster, of every master's (each id tagged with its node's port, id * 2**16)."""
    if hasattr(client, "get_primaries"):
        out: set[int] = set()
        for node in client.get_primaries():
            conn = client.get_redis_connection(node)
            out |= {i * 65536 + int(node.port) for i in blocked_ids(conn)}
        return out
    return {int(c["id"]) for c in client.client_list() if "b" in str(c.get("flags", ""))}


def wait_blocked(
    client: redis.Redis, before: set[int], proc: subprocess.Popen[str] | None = None
) -> int:
    """Wait until a client not in ``before`` blocks: the worker started after ``before`` was
    taken is idle in its wait. Returns that client's id."""

    def new() -> set[int]:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before it went idle")
        return blocked_ids(client) - before

    return min(wait_for(new, timeout=30))
