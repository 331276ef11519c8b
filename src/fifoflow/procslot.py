"""Process slots (``--processes``): each slot runs its jobs in a child process of its own,
so a job that overruns its timeout (or hangs, or leaks, or crashes its interpreter) is
stopped by killing that process, and the slot carries on with a fresh one.

On a worker with declared capacity each job runs pinned: its child is started with
``CUDA_VISIBLE_DEVICES`` = exactly the job's GPU ids (a job with other GPUs gets a fresh
child: CUDA reads the variable once per process) and ``FIFOFLOW_RESOURCES`` = its share.

Parent and child exchange JSON text only (``send_bytes``), never pickled objects. The
child runs the same ``execution.execute`` as a thread slot; the parent checks the module
allow-list before sending, so a disallowed target is never imported anywhere. A mode that
calls functions its own way (Prefect: each attempt a child flow run) names a *call
factory*, ``"module:function"`` taking a JSON-able config and returning the ``Call`` the
child passes to ``execute`` (``setup``); the config's ``"env"`` (if any) is set in the
child's environment before the factory's module is imported. While a job runs, its call
may ``tell_parent`` fields the dispatcher needs before the outcome (Prefect: the child
run's id, so a cancel in Prefect can reach the run); the runner hands them to its
``on_note`` and, if the process is killed or dies, puts them in the outcome's ``extra``.
Where the worker's ``call_starts_clock``, no timeout runs while the process starts and the
call sets up; the call's ``timeout_starts_now`` (a note) starts it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from .allowlist import Resolver, TargetNotAllowed, check_allowed
from .execution import Call, attempt_clock, direct_call, execute, one_line
from .records import Claimed, Outcome
from .resources import job_env

#: Seconds a cancelled job's process has between SIGTERM and SIGKILL.
STOP_GRACE = 5.0
#: Seconds an idle child has to exit by itself when its slot closes (it flushes what its
#: libraries still buffer, such as Prefect's logs and events) before it is killed.
CLOSE_GRACE = 5.0

#: A call factory and its config (JSON text): see the module docstring.
Setup = tuple[str, str]
#: The note a job's process sends when its call starts the job's clock (its set-up done).
CLOCK_NOTE = "fifoflow.clock"
#: Called in the slot thread with a note from the job's process: (job, fields, cancel flag).
OnNote = Callable[[Claimed, dict[str, str], threading.Event], None]

_parent: Connection | None = None  # in a child process: its end of the pipe
_send_lock = threading.Lock()


def tell_parent(fields: dict[str, str]) -> None:
    """In a process slot's child, while a job runs: send ``fields`` to the dispatcher now
    (a no-op anywhere else)."""
    if _parent is not None:
        with _send_lock:
            _parent.send_bytes(json.dumps({"note": fields}).encode())


def _child_main(
    conn: Connection,
    sys_path: list[str],
    modules: list[str],
    url: str | None,
    env: dict[str, str] | None = None,
    setup: Setup | None = None,
) -> None:
    # Pinned before anything is imported: CUDA reads CUDA_VISIBLE_DEVICES once.
    os.environ.update(env or {})
    # The parent handles SIGINT/SIGTERM and decides what happens to running jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    global _parent
    _parent = conn
    attempt_clock.start = lambda: tell_parent({CLOCK_NOTE: "start"})  # timeout_starts_now
    resolver = Resolver(modules)
    call: Call = direct_call
    if setup is not None:
        module, name = setup[0].split(":")
        config = json.loads(setup[1])
        os.environ.update(config.get("env") or {})
        call = getattr(importlib.import_module(module), name)(config)
    while True:
        try:
            job = Claimed(**json.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            return
        if env is not None:  # a worker with capacity: this job's share
            os.environ.update(job_env(job.alloc))
        outcome = execute(job, resolver, call, url=url)
        with _send_lock:
            conn.send_bytes(json.dumps(asdict(outcome)).encode())


class ProcessRunner:
    """One slot's child process, started on first use and replaced after a kill."""

    enforces_timeout = True

    def __init__(
        self,
        modules: Sequence[str],
        url: str | None = None,
        pinned: bool = False,
        setup: Callable[[], Setup | None] | None = None,
        call_starts_clock: bool = False,
    ) -> None:
        #: Jobs run pinned to their share (``CUDA_VISIBLE_DEVICES``, ``FIFOFLOW_RESOURCES``).
        self.pinned = pinned
        self._modules = list(modules)
        self._url = url
        self._setup = setup  # asked each time a child starts
        #: The factory's call starts each job's clock (``timeout_starts_now``) once its
        #: set-up is done; until then (and while the process starts) no timeout runs.
        self.call_starts_clock = call_starts_clock and setup is not None
        #: Gets each note a job's process sends while it runs (``tell_parent``).
        self.on_note: OnNote | None = None
        self._ctx: Any = multiprocessing.get_context("spawn")
        if pinned and "forkserver" in multiprocessing.get_all_start_methods():
            # A pinned worker starts a child per change of GPUs: forked from a server that
            # imported fifoflow once (and nothing that touches CUDA), it starts in
            # milliseconds; each child still sets its own CUDA_VISIBLE_DEVICES first.
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(["fifoflow.procslot"])
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._busy = False  # a job was sent and its outcome not yet read
        #: The GPUs the child was started with (None: not pinned, a plain worker).
        self._devices: str | None = None

    def _ensure(self, job: Claimed) -> Connection:
        # A worker with capacity pins each child to its job's GPUs (empty: none): a job
        # whose GPUs differ gets a fresh child, since CUDA reads them once per process.
        env = job_env(job.alloc) if self.pinned else None
        devices = env["CUDA_VISIBLE_DEVICES"] if env is not None else None
        if devices != self._devices:
            self.close()
        if self._proc is None or not self._proc.is_alive() or self._conn is None:
            self.close()
            parent, child = self._ctx.Pipe()
            self._proc = self._ctx.Process(
                target=_child_main,
                args=(
                    child,
                    list(sys.path),
                    self._modules,
                    self._url,
                    env,
                    None if self._setup is None else self._setup(),
                ),
                daemon=True,
            )
            self._devices = devices
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def run(self, job: Claimed, cancel: threading.Event | None = None) -> Outcome:
        """The attempt's outcome; the child is killed if it overruns ``job.timeout``
        (counted, where the call starts the clock, from when it says so)."""
        try:
            check_allowed(job.target, self._modules)
        except TargetNotAllowed as e:
            return Outcome("dead", one_line(e))
        conn = self._ensure(job)
        cancel = cancel if cancel is not None else threading.Event()
        deadline = None
        if job.timeout is not None and not self.call_starts_clock:
            deadline = time.monotonic() + job.timeout
        notes: dict[str, str] = {}
        try:
            self._busy = True
            conn.send_bytes(json.dumps(asdict(job)).encode())
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not conn.poll(left):
                    self.close()
                    return Outcome(
                        "fail",
                        f"TimeoutError: job exceeded its timeout of {job.timeout:g}s",
                        extra=notes,
                    )
                reply = json.loads(conn.recv_bytes())
                if "note" not in reply:
                    break
                if reply["note"].pop(CLOCK_NOTE, None) and job.timeout is not None:
                    # its set-up is done (a Prefect child run exists): the job's own time
                    # starts now, however long a loaded machine took to get here
                    deadline = time.monotonic() + job.timeout
                if not reply["note"]:
                    continue
                notes.update(reply["note"])
                if self.on_note is not None:
                    self.on_note(job, dict(reply["note"]), cancel)
            self._busy = False
        except (EOFError, OSError, ValueError):
            if self._proc is not None:
                self._proc.join(1.0)  # it is ending: its exit code, once it has one
            code = self._proc.exitcode if self._proc else None
            self.close()
            return Outcome(
                "fail", f"ChildProcessError: the job's process died (exit code {code})", extra=notes
            )
        return Outcome(
            reply["kind"], reply["payload"], reply["traceback"], dict(reply["extra"] or {})
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        """A cancel: SIGTERM to the child now, SIGKILL if it is still there after ``grace``
        seconds; the slot thread sees its job's process end."""
        proc = self._proc
        if proc is None or proc.pid is None or not proc.is_alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        timer = threading.Timer(grace, self._kill_if, args=(proc,))
        timer.daemon = True
        timer.start()

    def _kill_if(self, proc: multiprocessing.process.BaseProcess) -> None:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Kill the child from another thread; the slot thread sees its job's process die."""
        proc = self._proc
        if proc is not None and proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the child: an idle one is asked to exit (it gets ``CLOSE_GRACE`` seconds),
        a busy one is killed at once (its job is abandoned)."""
        idle = not self._busy
        self._busy = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if idle and self._proc.is_alive():
                self._proc.join(CLOSE_GRACE)  # its end of the pipe sees EOF: it returns
            if self._proc.is_alive() and self._proc.pid is not None:
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)
            self._proc = None
