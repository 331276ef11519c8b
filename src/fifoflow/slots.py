"""Process slots: each slot runs its jobs in a child process of its own, so a job that
overruns its timeout (or hangs, or leaks) is stopped by killing that process.

Parent and child exchange JSON text only (``send_bytes``), never pickled objects. The
child imports targets itself; the parent checks the module allow-list before sending, so a
disallowed target is never imported anywhere.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

from .queue import TARGET_RE

#: Outcome of one attempt as (outcome, payload, traceback): ("ok", result JSON, "") or
#: ("fail", one-line error, traceback).
Outcome = tuple[str, str, str]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class TargetNotAllowed(Exception):
    """The target lies outside the modules this worker was started with."""


def inside(module_name: str, modules: Sequence[str]) -> bool:
    return any(module_name == m or module_name.startswith(m + ".") for m in modules)


def check_allowed(target: str, modules: Sequence[str]) -> None:
    """Before any import: the target must name a public function of an allowed module."""
    if not TARGET_RE.match(target):
        raise TargetNotAllowed(f"invalid target {target!r}")
    module_name, attr = target.split(":")
    if not inside(module_name, modules):
        raise TargetNotAllowed(
            f"target {target!r} is outside the modules this worker serves "
            f"({', '.join(modules)}); it was not imported"
        )
    if attr.startswith("_"):
        raise TargetNotAllowed(f"target {target!r} is private: only public names can run")


def import_target(target: str, modules: Sequence[str]) -> Callable[..., Any]:
    """Import an allowed target; it must also be *defined* in an allowed module, so a name
    an allowed module merely imported (``from os import system``) cannot be run."""
    module_name, attr = target.split(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"target {target!r} is not callable")
    inner = getattr(fn, "fn", None) or getattr(fn, "__wrapped__", None) or fn  # Prefect flows
    defined_in = getattr(inner, "__module__", None)
    if not isinstance(defined_in, str) or not inside(defined_in, modules):
        raise TargetNotAllowed(
            f"target {target!r} is defined in {defined_in or 'an unknown module'}, outside "
            f"the modules this worker serves ({', '.join(modules)})"
        )
    return cast(Callable[..., Any], fn)


def call_target(fn: Callable[..., Any], target: str, params_json: str) -> Outcome:
    try:
        result = fn(**json.loads(params_json))
        try:
            text = json.dumps(result, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{target} returned a value that is not JSON: {e}") from None
        return "ok", text, ""
    except Exception as e:
        return "fail", one_line(e), traceback.format_exc()


def _child_main(conn: Connection, sys_path: list[str], modules: list[str]) -> None:
    # The parent handles SIGINT/SIGTERM and decides what happens to running jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    cache: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        target, params = request["target"], request["params"]
        try:
            fn = cache.get(target) or import_target(target, modules)
            cache[target] = fn
            outcome = call_target(fn, target, params)
        except TargetNotAllowed as e:
            outcome = ("dead", one_line(e), "")
        except Exception as e:
            outcome = ("fail", one_line(e), traceback.format_exc())
        conn.send_bytes(json.dumps(outcome).encode())


class ProcessSlot:
    """One child process, started on first use and replaced after a kill."""

    def __init__(self, modules: Sequence[str]) -> None:
        self._modules = list(modules)
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _ensure(self) -> Connection:
        if self._proc is None or not self._proc.is_alive() or self._conn is None:
            self.close()
            parent, child = self._ctx.Pipe()
            self._proc = self._ctx.Process(
                target=_child_main, args=(child, list(sys.path), self._modules), daemon=True
            )
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def run(self, target: str, params: str, timeout: float | None) -> Outcome:
        conn = self._ensure()
        try:
            conn.send_bytes(json.dumps({"target": target, "params": params}).encode())
            if not conn.poll(timeout):
                self.close()
                return "fail", f"TimeoutError: job exceeded its timeout of {timeout:g}s", ""
            outcome = json.loads(conn.recv_bytes())
        except (EOFError, OSError, ValueError):
            code = self._proc.exitcode if self._proc else None
            self.close()
            return "fail", f"ChildProcessError: the job's process died (exit code {code})", ""
        return str(outcome[0]), str(outcome[1]), str(outcome[2])

    def kill(self) -> None:
        """Kill the child from another thread; the slot thread sees its job's process die."""
        proc = self._proc
        if proc is not None and proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the child at once (its job, if any, is abandoned)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive() and self._proc.pid is not None:
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)
            self._proc = None
