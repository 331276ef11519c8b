"""Child flow runs: how one job's function becomes a flow run of the dispatcher's run.

* a target that is a Prefect ``@flow`` runs as itself (its retries, task runner, hooks,
  result settings and ``log_prints`` all apply);
* a Prefect ``@task`` runs inside a child flow named after the task;
* a plain function runs as a child flow named after it, with ``log_prints=True``.

Prefect records a subflow as a flow run whose ``parent_task_run_id`` points at a
"tracking" task run of the parent flow run; ``create_child_run`` makes both itself.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from prefect import Flow, Task
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import FlowRunCreate
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy, State
from prefect.flow_engine import run_flow
from prefect.states import Pending, to_state_create

from ..execution import JobInfo


class ChildRunFailed(RuntimeError):
    """A child flow run ended in a non-completed state without an exception to re-raise."""


def make_child_flow(target: str, fn: Callable[..., Any], timeout: float | None) -> Flow[..., Any]:
    """The Prefect flow one job of ``target`` runs as (see the module docstring)."""
    if isinstance(fn, Flow):
        if timeout and fn.timeout_seconds is None:
            return fn.with_options(timeout_seconds=timeout)
        return fn
    name: str | None = None
    body: Callable[..., Any] = fn
    if isinstance(fn, Task):
        body, name = _task_body(fn), fn.name
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        name = getattr(fn, "__name__", None) or target.split(":")[1]
    return Flow(
        fn=body,
        name=name,
        log_prints=True,
        validate_parameters=False,
        timeout_seconds=timeout,
    )


def _task_body(task: Task[..., Any]) -> Callable[..., Any]:
    """A flow body that runs ``task`` once, as a task of the child flow run."""
    if inspect.iscoroutinefunction(task.fn):

        @functools.wraps(task.fn)
        async def run_task_async(*args: Any, **kwargs: Any) -> Any:
            return await task(*args, **kwargs)

        return run_task_async

    @functools.wraps(task.fn)
    def run_task(*args: Any, **kwargs: Any) -> Any:
        return task(*args, **kwargs)

    return run_task


def create_child_run(
    client: SyncPrefectClient,
    parent_run_id: str,
    job: JobInfo,
    child: Flow[..., Any],
    tracking: Task[..., Any],
    parameters: dict[str, Any],
    tags: list[str],
    name: str | None = None,
    flow_id: UUID | None = None,
) -> FlowRun:
    """The child's flow run, created the way Prefect records a subflow: a tracking task
    run in the dispatcher's flow run, and a flow run whose parent_task_run_id is it.

    Created here rather than by Prefect's subflow call so that (1) the dynamic key is a
    UUID, never a per-flow counter shared by the slot threads, and (2) a "database is
    busy" answer of a SQLite-backed API is retried within milliseconds (``api_client``).
    ``name``: the run's name (``--run-name``); by default ``JOB-tryN``, or the flow's own
    ``flow_run_name``, which Prefect applies when the run starts. ``flow_id``: the flow's
    id in the API, when known: Prefect's ``create_flow_run`` upserts the flow by name
    first, one more API call per child that this saves.
    """
    task_run = client.create_task_run(
        task=tracking,
        flow_run_id=UUID(parent_run_id),
        dynamic_key=uuid4().hex,
        name=f"{child.name}-{job.id}-try{job.attempt}",
        extra_tags=tags,
        state=Pending(),
        task_inputs={name: [] for name in parameters},
    )
    run_name = name or (None if child.flow_run_name else f"{job.id}-try{job.attempt}")
    serialized = child.serialize_parameters(parameters)
    if flow_id is None:
        return client.create_flow_run(
            flow=child,
            name=run_name,
            parameters=serialized,
            tags=tags,
            parent_task_run_id=task_run.id,
        )
    create = FlowRunCreate(
        flow_id=flow_id,
        flow_version=child.version,
        name=run_name,
        parameters=serialized,
        context={},
        tags=tags,
        parent_task_run_id=task_run.id,
        state=to_state_create(Pending()),
        empirical_policy=FlowRunPolicy(
            retries=child.retries, retry_delay=int(child.retry_delay_seconds or 0)
        ),
    )
    body = create.model_dump(mode="json", exclude_unset=True)
    flow_run = FlowRun.model_validate(client.request("POST", "/flow_runs/", json=body).json())
    flow_run.parameters = serialized
    return flow_run


def run_to_state(
    child: Flow[..., Any], flow_run: FlowRun, parameters: dict[str, Any]
) -> State[Any]:
    """Run ``child`` in the given (already created) flow run; its final state."""
    if child.isgenerator:
        raise TypeError(f"flow {child.name!r} is a generator; fifoflow needs a return value")
    outcome = run_flow(flow=child, flow_run=flow_run, parameters=parameters, return_type="state")
    if inspect.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    if not isinstance(outcome, State):  # pragma: no cover - return_type="state"
        raise ChildRunFailed(f"Prefect returned {type(outcome).__name__}, not a state")
    return outcome
