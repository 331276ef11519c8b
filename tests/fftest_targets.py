"""Targets the tests push; workers in tests are started with this module."""

from __future__ import annotations

import json
import os
import socket
import time
from os import getcwd  # imported, not defined here: a worker must refuse to run it
from pathlib import Path
from typing import Any


def add(x: int, y: int = 0) -> int:
    return x + y


def echo(**params: Any) -> dict[str, Any]:
    return params


def noop() -> None:
    return None


def boom(message: str = "boom") -> None:
    raise ValueError(message)


def not_json() -> object:
    return {1, 2}


def sleep(seconds: float, **_: Any) -> float:
    time.sleep(seconds)
    return seconds


def record(log: str, n: int, seconds: float = 0.0, marker: str | None = None, **_: Any) -> int:
    """Append a start line (and sleep) so tests can check order and double runs; with
    ``marker``, then run until that file exists (see ``hold``)."""
    with open(log, "a") as fh:
        fh.write(json.dumps({"n": n, "pid": os.getpid(), "t": time.time()}) + "\n")
    if seconds:
        time.sleep(seconds)
    if marker is not None:
        hold(marker)
    return n


def hold(marker: str, seconds: float = 90.0) -> str:
    """Run until the test creates ``marker`` (at most ``seconds``): a job that is running
    for exactly as long as the test needs, however slow the machine."""
    deadline = time.monotonic() + seconds
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} never appeared")
        time.sleep(0.02)
    return marker


def flaky(marker: str) -> str:
    """Fails on the first attempt, succeeds on the second (state in a marker file)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


def sleep_then_touch(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).write_text("done")


def step(n: int, seconds: float = 0.0, fail: bool = False, **_: Any) -> int:
    """A DAG node: sleeps, fails when told to, returns its number."""
    if seconds:
        time.sleep(seconds)
    if fail:
        raise ValueError(f"step {n} fails")
    return n


def total(results: list[Any], **_: Any) -> dict[str, Any]:
    """A fan-in: what it gathered, and their sum."""
    return {"count": len(results), "sum": sum(r for r in results if r), "results": results}


def fan_out(n: int) -> list[str]:
    """Pushes ``n`` children of its own from inside (``current_job().push``)."""
    import fifoflow

    job = fifoflow.current_job()
    assert job is not None
    return [job.push("fftest_targets:add", {"x": i}).id for i in range(n)]


def cooperative(marker: str, seconds: float = 60.0) -> str:
    """Long work that looks for a cancel between steps (and says it started)."""
    import fifoflow

    Path(marker).write_text("started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fifoflow.check_cancelled()
        time.sleep(0.02)
    return "finished"


def stubborn(marker: str, seconds: float = 60.0) -> str:
    """Long work that never looks for a cancel (a process slot must be terminated)."""
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


def _private() -> str:
    return "should never run as a job"


__all__ = ["getcwd"]


def held_on_host(log: str, markers: str, seconds: float = 90.0) -> str:
    """Append this host's name to ``log``, then run until ``markers/HOSTNAME`` exists: each
    host's attempt ends when the test says so. Returns the host's name."""
    host = socket.gethostname()
    with open(log, "a") as fh:
        fh.write(json.dumps({"host": host, "pid": os.getpid(), "t": time.time()}) + "\n")
    hold(str(Path(markers) / host), seconds)
    return host


def slow_setup_call(config: dict[str, Any]) -> Any:
    """A process slot's call factory (``procslot``) whose calls first spend
    ``config["setup"]`` seconds on set-up, as Prefect mode's calls create a child run,
    then start the job's clock (``timeout_starts_now``)."""
    from fifoflow.execution import direct_call, timeout_starts_now

    def call(job: Any, fn: Any, kwargs: dict[str, Any], extra: dict[str, str]) -> Any:
        time.sleep(config["setup"])
        timeout_starts_now()
        return direct_call(job, fn, kwargs, extra)

    return call
