"""The Prefect worker's side of each attempt, beyond running it: the config a process
slot starts with, the summary row of an attempt that ran in a process slot (or never got a
run), and the last lifecycle event of a child run once its outcome is recorded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..execution import JobInfo
from ..procslot import Setup
from ..records import Claimed, Outcome
from .events import FINAL
from .procchild import FACTORY

if TYPE_CHECKING:
    from .worker import PrefectWorker


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
    }
    return FACTORY, json.dumps(config)


def note_attempt(w: PrefectWorker, job: Claimed, outcome: Outcome, duration: float) -> None:
    """The summary row of an attempt run in a process slot, or refused before any child
    run existed (params that do not fit, a target that does not exist)."""
    extra = dict(outcome.extra)
    state = extra.pop("flow_run_state", None)  # from a process slot: not for the record
    outcome.extra = extra
    run_id = extra.get("flow_run_id")
    info = JobInfo(job.id, job.queue, job.target, job.attempts, job.timeout)
    params = json.loads(job.params)
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
    info = JobInfo(job.id, job.queue, job.target, job.attempts, job.timeout)
    payload = {} if outcome.kind == "ok" else {"error": outcome.payload}
    attempts.emit(what, info, run_id, payload=payload)
