"""Durability of the embedded server: FIFOFLOW_APPENDFSYNC (``everysec`` by default, or
``always``) and what survives a SIGKILL of the server process.

With ``always`` the server fsyncs its append-only file before it answers, so every push
that was acknowledged is on disk even if the machine dies right after. These tests kill the
server process with SIGKILL right after the last acknowledged write and count what comes
back after a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from conftest import EmbeddedServer
from fifoflow import Queue, server
from qops import claim, complete

CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def always() -> Iterator[EmbeddedServer]:
    """An embedded server of its own (it gets killed), started with appendfsync always."""
    srv = EmbeddedServer(appendfsync="always")
    yield srv
    srv.close()


def config(url: str, name: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return str(client.config_get(name)[name])
    finally:
        client.close()


def sigkill_server(srv: EmbeddedServer) -> None:
    """kill -9 the server and wait until it is gone (a zombie counts as gone)."""
    pid = server.read_pid(server.Paths(srv.home))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.read_pid(server.Paths(srv.home)) is not None:
        assert time.monotonic() < deadline, "the server survived SIGKILL"
        time.sleep(0.01)


def test_always_keeps_every_acknowledged_write_across_sigkill(
    always: EmbeddedServer, qname: str
) -> None:
    assert config(always.url, "appendfsync") == "always"
    assert config(always.url, "appendonly") == "yes"
    q = Queue(qname, url=always.url)
    # some finished work (results are acknowledged writes too) ...
    done = q.push_many("fftest_targets:add", [{"x": i} for i in range(20)])
    _, claimed = claim(q, "w", 20, ["default"], 30)
    for c in claimed:
        assert complete(q, c, "ok", json.dumps(json.loads(c.params)["x"])).outcome == "succeeded"
    # ... then one acknowledged push after another, and a batch, right up to the kill
    pushed = [q.push("fftest_targets:add", {"x": i, "s": "é" * i}).id for i in range(300)]
    pushed += [j.id for j in q.push_many("fftest_targets:add", [{"x": i} for i in range(200)])]
    last = q.push("fftest_targets:add", {"x": "last"}).id
    sigkill_server(always)  # at once: no SHUTDOWN, no final fsync
    q.close()

    url = server.ensure_running(always.home, "always")
    assert url == always.url
    q = Queue(qname, url=url)
    try:
        assert q.job_ids("queued") == [*pushed, last]
        assert q.record(last)["params"] == {"x": "last"}  # type: ignore[index]
        assert q.record(pushed[299])["params"] == {"x": 299, "s": "é" * 299}  # type: ignore[index]
        assert q.job_ids("succeeded") == [j.id for j in done]
        assert [q.job(j.id).result() for j in done] == list(range(20))
        assert q.stats() == {
            "queued": 501,
            "waiting": 0,
            "delayed": 0,
            "running": 0,
            "succeeded": 20,
            "dead": 0,
            "cancelled": 0,
        }
    finally:
        q.close()


def test_everysec_is_the_default(valkey: EmbeddedServer) -> None:
    assert config(valkey.url, "appendfsync") == "everysec"
    assert config(valkey.url, "appendonly") == "yes"


def test_appendfsync_setting_reaches_the_server(cli: CLI) -> None:
    env = {"FIFOFLOW_APPENDFSYNC": "always"}
    r = cli("server", "start", env=env)
    assert r.returncode == 0, r.stderr
    try:
        info = json.loads(cli("server", "status", "--json").stdout)
        assert (info["appendfsync"], info["persistence"]) == ("always", "append-only")
    finally:
        assert cli("server", "stop").returncode == 0
    r = cli("server", "start")
    try:
        assert json.loads(cli("server", "status", "--json").stdout)["appendfsync"] == "everysec"
    finally:
        assert cli("server", "stop").returncode == 0


def test_bad_appendfsync_is_one_clear_line(cli: CLI) -> None:
    r = cli("server", "start", env={"FIFOFLOW_APPENDFSYNC": "sometimes"})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert "FIFOFLOW_APPENDFSYNC" in r.stderr and "sometimes" in r.stderr
    assert json.loads(cli("server", "status", "--json").stdout) == {"running": False}
