"""The embedded Valkey: started on first use in a home folder, unix socket only (0700),
append-only persistence, a pid file, one server however many processes start it at once,
``status`` and ``stop``. Every server started here is stopped by pid at teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import wait_for
from fifoflow import Queue, ServerError, server


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """The process exited (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server._alive(pid):
            return True
        time.sleep(0.02)
    return False


def _server_pids(home: Path) -> list[int]:
    """Processes whose working directory is this home's data folder: the servers of it."""
    data = str(server.Paths(home).data.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == data:
                    pids.append(int(entry.name))
    return pids


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh, short home under /tmp (not yet created: ensure_running makes it)."""
    base = Path(tempfile.mkdtemp(prefix="ffs-", dir="/tmp"))
    h = base / "h"
    yield h
    with contextlib.suppress(Exception):
        server.stop(h)
    for pid in [server.read_pid(server.Paths(h)), *_server_pids(h)]:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_ensure_running_starts_a_private_persistent_server(home: Path) -> None:
    paths = server.Paths(home)
    assert server.status(home) is None
    url = server.ensure_running(home)
    assert url == f"unix://{home}/valkey.sock"
    st = paths.socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.data.stat().st_mode) == 0o700
    pid = server.read_pid(paths)
    assert pid is not None and pid == int(paths.pidfile.read_text())
    client = _client(url)
    try:
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert client.config_get("port")["port"] == "0"  # no TCP port at all
        info = client.info()
        assert info["tcp_port"] == 0
        assert info["aof_enabled"] == 1
        assert info["process_id"] == pid
    finally:
        client.close()
    assert _server_pids(home) == [pid]


def test_ensure_running_reuses_the_running_server(home: Path) -> None:
    url = server.ensure_running(home)
    pid = server.read_pid(server.Paths(home))
    assert server.ensure_running(home) == url
    assert server.read_pid(server.Paths(home)) == pid
    assert _server_pids(home) == [pid]


def test_status_fields(home: Path) -> None:
    server.ensure_running(home, appendfsync="always")
    s = server.status(home)
    assert s is not None
    assert s["url"] == server.Paths(home).url
    assert s["home"] == str(home)
    assert s["pid"] == server.read_pid(server.Paths(home))
    assert isinstance(s["version"], str) and s["version"][0].isdigit()
    assert s["memory"]
    assert isinstance(s["uptime_seconds"], int)
    assert s["persistence"] == "append-only"
    assert s["appendfsync"] == "always"


def test_stop(home: Path) -> None:
    server.ensure_running(home)
    pid = server.read_pid(server.Paths(home))
    start = time.monotonic()
    assert server.stop(home) == pid
    assert time.monotonic() - start < 5
    assert pid is not None and _gone(pid)
    assert server.status(home) is None
    assert server.read_pid(server.Paths(home)) is None
    assert server.stop(home) is None  # nothing left to stop


def test_data_survives_stop_and_start(home: Path) -> None:
    url = server.ensure_running(home)
    q = Queue("persist", url=url)
    job = q.push("fftest_targets:add", {"x": 1}, key="k")
    q.close()
    server.stop(home)
    url = server.ensure_running(home)
    q = Queue("persist", url=url)
    try:
        assert q.job(job.id).to_dict()["params"] == {"x": 1}
        assert q.push("fftest_targets:add", key="k").id == job.id
    finally:
        q.close()
    assert list(server.Paths(home).data.rglob("*.aof"))


def test_starts_again_after_a_crash(home: Path) -> None:
    """SIGKILL leaves a stale socket and pid file behind; the next use starts afresh.
    (appendfsync always: with everysec a crash may lose the last second or two of writes,
    which is that setting's documented trade-off, not what this test is about.)"""
    url = server.ensure_running(home, appendfsync="always")
    q = Queue("crash", url=url)
    job = q.push("fftest_targets:add")
    q.close()
    pid = server.read_pid(server.Paths(home))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    assert server.Paths(home).socket.exists()
    assert server.status(home) is None
    assert server.ensure_running(home) == url
    new_pid = server.read_pid(server.Paths(home))
    assert new_pid not in (None, pid)
    q = Queue("crash", url=url)
    try:
        assert q.job(job.id).status == "queued"
    finally:
        q.close()


CONCURRENT = """
import sys, time
from pathlib import Path
import redis
from fifoflow import server
home, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("imported")
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
url = server.ensure_running(home)
client = redis.Redis.from_url(url)
print(url, client.info()["process_id"])
"""


def test_concurrent_first_uses_end_with_one_server(home: Path, tmp_path: Path) -> None:
    # A barrier, not a start time: every interpreter has imported fifoflow and waits for
    # the go file, so the four first uses really race, however slow the start-ups are.
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(home), str(r), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    outputs = []
    try:
        wait_for(
            lambda: all(r.exists() for r in ready) or any(p.poll() is not None for p in procs),
            timeout=60,
        )
        go.write_text("go")
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outputs.append(out.split())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert len({tuple(o) for o in outputs}) == 1  # same URL, same server pid
    pid = int(outputs[0][1])
    assert server.read_pid(server.Paths(home)) == pid
    assert _server_pids(home) == [pid]


def test_long_home_gets_a_short_socket_path(home: Path) -> None:
    deep = home / ("d" * 120)
    paths = server.Paths(deep)
    assert len(str(paths.socket)) <= server.SOCKET_PATH_MAX
    assert str(paths.socket).startswith(tempfile.gettempdir())
    try:
        url = server.ensure_running(deep)
        assert url == paths.url
        client = _client(url)
        assert client.ping()
        client.close()
        assert server.stop(deep) is not None
    finally:
        with contextlib.suppress(Exception):
            server.stop(deep)
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()


def test_bad_appendfsync(home: Path) -> None:
    with pytest.raises(ServerError):
        server.ensure_running(home, appendfsync="sometimes")
    assert server.status(home) is None


def test_queue_without_url_starts_the_embedded_server(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIFOFLOW_HOME", str(home))
    monkeypatch.delenv("FIFOFLOW_URL", raising=False)
    q = Queue("auto")
    try:
        job = q.push("fftest_targets:add", {"x": 2})
        assert job.status == "queued"
    finally:
        q.close()
    assert server.status(home) is not None
    q2 = Queue("auto")  # a later use reuses it
    try:
        assert q2.job(job.id).to_dict()["params"] == {"x": 2}
    finally:
        q2.close()
    assert len(_server_pids(home)) == 1


def test_the_server_gets_a_deep_malloc_cache(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk push frees tens of thousands of small objects per script call; the server
    runs with glibc's per-thread cache raised for them, next to the user's own tunables.
    (The server overwrites its /proc environ with its title: a wrapper records it.)"""
    real, seen = server.binary(), tmp_path / "env"
    wrapper = tmp_path / "valkey-server"
    wrapper.write_text(f'#!/bin/sh\nprintenv GLIBC_TUNABLES > "{seen}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(server, "binary", lambda: wrapper)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    with redis.Redis.from_url(server.ensure_running(home)) as client:
        assert client.ping()
    assert seen.read_text().strip() == f"glibc.malloc.arena_max=2:{server.MALLOC_TUNABLE}"


def test_a_users_own_malloc_cache_setting_wins() -> None:
    env = server.server_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7", "PATH": "/bin"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7", "PATH": "/bin"}
    assert server.server_env({})["GLIBC_TUNABLES"] == server.MALLOC_TUNABLE
