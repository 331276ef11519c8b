"""One attempt as one child flow run, the same way in a thread slot and in a process slot.

``Attempts`` holds what every attempt of one dispatcher shares (the API client, the
dispatcher's flow run id, the ``--run-name`` template, the flows made per target) and
runs an attempt in three steps: ``create`` the child run (name, tags, its tracking task
run in the dispatcher's run; events ``queued`` and ``started``), ``run`` it to a final
state, and ``outcome`` (the result, or the child's own exception raised again).

Thread slots share one ``Attempts`` (and one API client, one connection pool) in the
dispatcher's process; each process slot has its own in its process (``procchild``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import prefect
from prefect import Flow, Task
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.utilities.callables import get_call_parameters

from ..execution import JobInfo
from .children import ChildRunFailed, create_child_run, make_child_flow, run_to_state
from .events import emit_job_event
from .runname import RunName

#: Tags put on every child flow run (and the tasks inside it).
CHILD_TAG = "fifoflow"


def child_tags(job: JobInfo) -> list[str]:
    """The tags of a job's runs: ``fifoflow``, ``fifoflow-queue:QUEUE`` and the job's own."""
    return list(dict.fromkeys([CHILD_TAG, f"fifoflow-queue:{job.queue}", *job.tags]))


@dataclass(slots=True)
class Child:
    """A created child run, about to run."""

    flow: Flow[..., Any]
    run: FlowRun
    parameters: dict[str, Any]
    tags: list[str]

    @property
    def run_id(self) -> str:
        return str(self.run.id)


class Attempts:
    def __init__(
        self,
        client: SyncPrefectClient,
        dispatcher_run_id: str,
        worker: str,
        run_name: RunName | None = None,
        events: bool = True,
    ) -> None:
        self.client, self.dispatcher_run_id = client, dispatcher_run_id
        self.worker, self.run_name, self.events = worker, run_name, events
        self._flows: dict[tuple[str, float | None], tuple[Flow[..., Any], Task[..., Any]]] = {}
        self._flow_ids: dict[str, UUID] = {}  # flow name -> its id in the API
        self._lock = threading.Lock()

    def child_flow(
        self, job: JobInfo, fn: Callable[..., Any]
    ) -> tuple[Flow[..., Any], Task[..., Any]]:
        """The job's child flow and the tracking task of the dispatcher's run, made once
        per target and timeout."""
        key = (job.target, job.timeout)
        with self._lock:
            pair = self._flows.get(key)
            if pair is None:
                child = make_child_flow(job.target, fn, job.timeout)
                # What Prefect's own subflow call puts in the parent run for a child.
                tracking = Task(name=child.name, fn=child.fn, version=child.version)
                pair = self._flows[key] = (child, tracking)
        return pair

    def create(self, job: JobInfo, fn: Callable[..., Any], params: dict[str, Any]) -> Child:
        """The attempt's child flow run, created (not started); ``RunNameError`` if the
        params do not fill ``--run-name``."""
        flow, tracking = self.child_flow(job, fn)
        parameters = get_call_parameters(flow.fn, (), params)
        name = self.run_name.render(job.id, parameters) if self.run_name else None
        tags = child_tags(job)
        flow_id = self._flow_ids.get(flow.name)
        if flow_id is None:  # once per flow (the API upserts it by name)
            flow_id = self._flow_ids[flow.name] = self.client.create_flow(flow)
        run = create_child_run(
            self.client,
            self.dispatcher_run_id,
            job,
            flow,
            tracking,
            parameters,
            tags,
            name,
            flow_id,
        )
        child = Child(flow, run, parameters, tags)
        self.emit("queued", job, child.run_id, occurred=job.queued_at)
        return child

    def run(self, job: JobInfo, child: Child) -> State[Any]:
        """Run the created child to its final state."""
        self.emit("started", job, child.run_id)
        with prefect.tags(*child.tags):
            return run_to_state(child.flow, child.run, child.parameters)

    @staticmethod
    def outcome(state: State[Any], run_id: str) -> Any:
        """The child's result; its own exception (or ``ChildRunFailed``) if it did not
        complete."""
        if state.is_completed():
            return state.result()
        state.result()  # re-raises the child's own exception
        raise ChildRunFailed(f"child flow run {run_id} ended {state.name}: {state.message}")

    def emit(
        self,
        what: str,
        job: JobInfo,
        run_id: str,
        occurred: float | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        if self.events:
            emit_job_event(
                what,
                run_id,
                job_id=job.id,
                queue=job.queue,
                target=job.target,
                attempt=job.attempt,
                dispatcher_run_id=self.dispatcher_run_id,
                worker=self.worker,
                occurred=occurred,
                payload=payload,
            )
