"""A process slot's side of Prefect mode (``--prefect --processes``).

Each process slot runs its attempts in a child process of its own (``procslot``), which
calls ``make_call`` once when it starts. The config names the API the dispatcher uses
(so a dispatcher on Prefect's local ephemeral API does not make each process start
another) and the dispatcher's flow run: each attempt's child flow run is created in this
process with a tracking task run in that flow run as its parent, exactly as a thread slot
creates it, so the runs are children of the dispatcher wherever they run. This process
keeps one API client (and its connections) for all its attempts, and the engine runs
every flow with that same client. Each attempt tells the dispatcher its child run's id as
soon as the run exists (``procslot.tell_parent``): a cancel of that run in Prefect reaches
the job, and a run whose process is killed gets its final state from the dispatcher.
"""

from __future__ import annotations

import atexit
import contextlib
from pathlib import Path
from typing import Any

from ..execution import Call, JobInfo, timeout_starts_now
from ..procslot import tell_parent

#: ``procslot`` imports the call factory by this name.
FACTORY = f"{__name__}:make_call"


def make_call(config: dict[str, Any]) -> Call:
    """The ``Call`` a process slot runs attempts with (see the module docstring)."""
    # Prefect reads its settings at import: ``procslot`` set ``config["env"]`` (the API's
    # URL) before it imported this module, and so Prefect.
    from prefect.context import SyncClientContext
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import temporary_settings

    from .attempts import Attempts
    from .client import quick_retry
    from .gate import ApiGate
    from .runname import RunName

    stack = contextlib.ExitStack()
    if not config.get("heartbeats"):
        stack.enter_context(temporary_settings(updates={"flows.heartbeat_frequency": None}))
    gate = None
    if config.get("gate"):
        with contextlib.suppress(OSError):  # no lock files here: ungated
            gate = ApiGate(Path(config["gate"][0]), int(config["gate"][1]))
    client = quick_retry(stack.enter_context(SyncClientContext.get_or_create()).client, gate)
    template = config.get("run_name")
    attempts = Attempts(
        client,
        config["dispatcher_run_id"],
        config["worker"],
        RunName(template) if template else None,
        events=config.get("events", True),
    )

    def drain() -> None:
        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=5)
        with contextlib.suppress(Exception):
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=5)
        with contextlib.suppress(Exception):
            stack.close()

    atexit.register(drain)

    def call(job: JobInfo, fn: Any, kwargs: dict[str, Any], extra: dict[str, str]) -> Any:
        child = attempts.create(job, fn, kwargs)
        extra["flow_run_id"] = child.run_id
        tell_parent({"flow_run_id": child.run_id})
        timeout_starts_now()  # the job's own time starts with its child run
        state = attempts.run(job, child)
        extra["flow_run_state"] = str(state.name)
        return attempts.outcome(state, child.run_id)

    return call
