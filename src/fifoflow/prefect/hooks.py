"""The Prefect worker's side of each attempt, beyond running it: the config a process
slot starts with, the summary row of an attempt that ran in a process slot (or never got a
run), and the last lifecycle event of a child run once its outcome is recorded.

A process slot's child run is known to the dispatcher from the moment it exists (its
process sends the id, ``procslot.tell_parent``): it is one of ``active_children`` until
the attempt ends, so ``PrefectCancelWatch`` sees a cancel of it in Prefect. A process that
is killed (a cancel, a timeout) or dies cannot end its run: the dispatcher sets it
Cancelled (a cancel) or Crashed (anything else), never leaving it Running.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Crashed

from ..execution import JobInfo
from ..procslot import ProcessRunner, Setup
from ..records import Claimed, Outcome
from .events import FINAL
from .procchild import FACTORY

if TYPE_CHECKING:
    from ..execution import Runner

if TYPE_CHECKING:
    from .worker import PrefectWorker


def _info(job: Claimed, cancel: threading.Event | None = None) -> JobInfo:
    if cancel is None:
        return JobInfo(job.id, job.queue, job.target, job.attempts, job.timeout)
    tags = tuple(job.tag_list())
    return JobInfo(job.id, job.queue, job.target, job.attempts, job.timeout, None, cancel, tags)


def watch_runs(w: PrefectWorker, runner: Runner) -> Runner:
    """A process slot's runner tells the worker each child run as soon as it exists."""
    if isinstance(runner, ProcessRunner):

        def started(job: Claimed, note: dict[str, str], cancel: threading.Event) -> None:
            run_id = note.get("flow_run_id")
            if run_id is not None:  # the slot's cancel flag is the job's: set by any cancel
                with w._active_lock:
                    w._active[run_id] = _info(job, cancel)

        runner.on_note = started
    return runner


def stop_process_run(w: PrefectWorker, job: JobInfo) -> None:
    """A process slot's run was cancelled in Prefect: the job is cancelled on the server
    first (its end is then never a retry), then its process is stopped exactly as for
    ``fifoflow cancel`` (SIGTERM, SIGKILL after the grace period), which sets its flag."""
    if w.retry.once(lambda: w.broker.cancel(job.queue, job.id)) is not None:
        w.cancel_running(job.id)  # else the next look tries again


def _end_run(w: PrefectWorker, job: Claimed, run_id: str, outcome: Outcome) -> str:
    """The final state of a run whose process was killed or died before ending it."""
    with w._active_lock:
        noted = w._active.get(run_id)
    final: State[Any]
    if noted is not None and noted.cancelled:
        final = Cancelled(message=f"job {job.id} was cancelled; its process was stopped")
    else:
        final = Crashed(message=f"job {job.id}: {outcome.payload}")
    api = w.api
    if api is not None:
        w.quietly(lambda: api.set_flow_run_state(UUID(run_id), final, force=True))
    return str(final.name)


def process_setup(w: PrefectWorker) -> Setup:
    """What a process slot's child needs to run attempts (asked when it starts): the API's
    URL (set before Prefect is imported there) and the dispatcher's run."""
    if w.api is None or w.flow_run_id is None:  # pragma: no cover - run() first
        raise RuntimeError("process slots start only inside PrefectWorker.run")
    template = w.run_name_template
    config = {
        "env": {"PREFECT_API_URL": str(w.api.api_url).rstrip("/")},
        "dispatcher_run_id": w.flow_run_id,
        "worker": w.name,
        "run_name": template.template if template else None,
        "heartbeats": w.child_heartbeats,
        "events": w.events,
        "gate": None if w.gate is None else [str(w.gate.directory), w.gate.ceiling],
    }
    return FACTORY, json.dumps(config)


def note_attempt(w: PrefectWorker, job: Claimed, outcome: Outcome, duration: float) -> None:
    """The summary row of an attempt run in a process slot, or refused before any child
    run existed (params that do not fit, a target that does not exist)."""
    extra = dict(outcome.extra)
    state = extra.pop("flow_run_state", None)  # from a process slot: not for the record
    outcome.extra = extra
    run_id = extra.get("flow_run_id")
    info = _info(job)
    params = json.loads(job.params)
    if run_id is not None and w.processes:
        if state is None:  # the process did not end its run: killed, or it died
            state = _end_run(w, job, run_id, outcome)
        with w._active_lock:
            w._active.pop(run_id, None)
    if run_id is None:
        w._summary.note(info, params, "NotStarted", duration, None)
    elif w.processes:
        w.note_done(info, params, state or "Crashed", duration, run_id)


def emit_final(w: PrefectWorker, job: Claimed, outcome: Outcome, result: str) -> None:
    """The attempt's recorded outcome, as the last event of its child run."""
    run_id = outcome.extra.get("flow_run_id")
    what = FINAL.get(result)
    attempts = w._attempts
    if run_id is None or what is None or attempts is None:
        return
    info = _info(job)
    payload = {} if outcome.kind == "ok" else {"error": outcome.payload}
    attempts.emit(what, info, run_id, payload=payload)
