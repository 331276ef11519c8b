"""Targets for the Prefect-mode tests: Prefect flows, a task, and plain functions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS

from fifoflow.prefect import current_job


def plain(n: int, seconds: float = 0.0) -> int:
    """A plain function: runs as a child flow named 'plain'; its prints are logged."""
    print(f"plain print n={n}")
    get_run_logger().info("plain log n=%d", n)
    if seconds:
        time.sleep(seconds)
    return n * 2


def plain_boom(n: int) -> None:
    print(f"boom print n={n}")
    raise ValueError(f"boom {n}")


@flow(name="ff-hello")
def hello(n: int) -> dict[str, Any]:
    get_run_logger().info("hello log n=%d", n)
    print(f"hello print n={n}")
    info = current_job()
    return {"n": n, "job": info.id if info else None, "attempt": info.attempt if info else None}


@flow(name="ff-fails")
def fails(n: int) -> None:
    get_run_logger().info("fails log n=%d", n)
    raise RuntimeError(f"flow failed n={n}")


@flow(name="ff-flaky")
def flaky(marker: str) -> str:
    """Fails on its first fifoflow attempt only."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


_task_calls: dict[str, int] = {}


@task(retries=2, retry_delay_seconds=0)
def shaky_double(x: int, key: str) -> int:
    """Fails its first Prefect task attempt: the task's own retries must still work."""
    _task_calls[key] = _task_calls.get(key, 0) + 1
    if _task_calls[key] == 1:
        raise RuntimeError("task's first try fails")
    return 2 * x


@flow(name="ff-with-task")
def with_task(x: int, key: str) -> int:
    value = shaky_double(x, key)
    create_markdown_artifact(markdown=f"**x** = {x}, doubled = {value}", key="ff-with-task")
    return value


@task
def triple(x: int) -> int:
    print(f"triple print x={x}")
    return 3 * x


@flow(name="ff-async")
async def ahello(n: int) -> int:
    get_run_logger().info("async log n=%d", n)
    return n + 100


@flow(name="ff-sleepy")
def sleepy(n: int, seconds: float = 0.0) -> int:
    get_run_logger().info("sleepy start n=%d", n)
    if seconds:
        time.sleep(seconds)
    return n


@flow(name="ff-sleepy-until")
def sleepy_until(n: int, marker: str, seconds: float = 150.0) -> int:
    """As ``sleepy``, but runs until the test creates ``marker`` (at most ``seconds``)."""
    get_run_logger().info("sleepy start n=%d", n)
    deadline = time.monotonic() + seconds
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


@flow(name="ff-noop")
def noop() -> None:
    return None


@task(cache_policy=INPUTS, persist_result=True)
def square(x: int) -> int:
    return x * x


@flow(name="ff-cached")
def cached(x: int) -> int:
    """Two jobs with the same x: the second child's task run is a cache hit."""
    return square(x)


def _write_state(flow: Any, flow_run: Any, state: Any) -> None:
    Path(flow_run.parameters["marker"]).write_text(f"{flow_run.name} {state.name}")


@flow(name="ff-hooked", on_completion=[_write_state])
def hooked(marker: str) -> str:
    return "done"


def where(n: int, lr: float = 0.1) -> dict[str, Any]:
    """A plain function that says which process ran it (process slots: not the worker's)."""
    import os

    info = current_job()
    print(f"where print n={n}")
    return {"n": n, "pid": os.getpid(), "tags": list(info.tags) if info else None}


def flaky_plain(marker: str, n: int = 0) -> str:
    """Fails on its first attempt only (a plain function)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


def until_cancelled(seconds: float = 120.0) -> str:
    """Runs until its job is cancelled (``fifoflow cancel``), at most ``seconds``."""
    from fifoflow import check_cancelled

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check_cancelled()
        time.sleep(0.05)
    return "not cancelled"
