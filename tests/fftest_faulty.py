"""Targets for the worker fault tests (tests/test_faults_worker.py): jobs that kill their
worker, exit, interrupt, overrun, or declare errors that must not be retried.

Every target that tests time or order appends one JSON line per event to a log file:
``{"n": ..., "pid": ..., "t": time.time(), ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import fifoflow

NoRetry = fifoflow.NoRetry
no_retry = fifoflow.no_retry


def _log(log: str, **fields: Any) -> None:
    line = json.dumps({"pid": os.getpid(), "t": time.time(), **fields})
    with open(log, "a") as fh:
        fh.write(line + "\n")


def record(log: str, n: Any, seconds: float = 0.0, **_: Any) -> Any:
    """Log the start (pid and time), then sleep ``seconds``."""
    _log(log, n=n, ev="start")
    if seconds:
        time.sleep(seconds)
    return n


def hold(log: str, n: Any, marker: str, seconds: float = 60.0) -> Any:
    """Log the start, then run until ``marker`` exists (at most ``seconds``)."""
    _log(log, n=n, ev="start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not Path(marker).exists():
        time.sleep(0.02)
    return n


def ticking(log: str, seconds: float, tick: float = 0.05) -> float:
    """One attempt, alive for ``seconds``: a start line, a tick line every ``tick`` seconds
    and an end line, all tagged with an attempt id, so a test can tell whether two attempts
    of one job ran at the same time in one process."""
    attempt = uuid.uuid4().hex[:8]
    _log(log, attempt=attempt, ev="start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(tick)
        _log(log, attempt=attempt, ev="tick")
    _log(log, attempt=attempt, ev="end")
    return seconds


def suicide(log: str) -> None:
    """A poison job: kills its own worker process outright (no cleanup, no report)."""
    _log(log, n="poison", ev="start")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # SIGKILL is not instantaneous; never return normally


def exit_now(code: int = 2) -> None:
    sys.exit(code)


def interrupt() -> None:
    raise KeyboardInterrupt


def refuse(message: str = "bad input, retrying cannot help") -> None:
    raise NoRetry(message)


class BadInput(NoRetry):
    """A target's own non-retryable error: a subclass of fifoflow.NoRetry."""


def refuse_with_subclass(message: str = "bad input (subclass)") -> None:
    raise BadInput(message)


@no_retry(KeyError)
def lookup(key: str) -> Any:
    """Declares KeyError non-retryable: a missing key will not appear by retrying."""
    table: dict[str, Any] = {"known": 1}
    return table[key]
