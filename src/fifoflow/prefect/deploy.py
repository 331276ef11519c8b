"""The dispatcher as a Prefect deployment (``fifoflow deploy``).

``deploy`` registers the flow ``fifoflow-dispatcher`` (``fifoflow_dispatcher`` below, by
its module path, so a pool worker imports it from the installed fifoflow) as a deployment
on a work pool, with the worker's settings as its default parameters. A run of it, started
from the UI, a schedule, or ``prefect deployment run fifoflow-dispatcher/NAME``, is a
``PrefectWorker`` working the queues inside that flow run; its jobs are child runs of it.

A cancel of that run (UI, API) drains it like SIGTERM: ``PrefectCancelWatch`` sees its
own run Cancelling and stops claiming; running jobs get the grace period (Prefect's
process worker terminates the run's process itself after its own grace, 30 s by default),
and jobs still running then go back in line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any
from uuid import UUID

import httpx
from prefect import flow
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from ..errors import FifoflowError, UsageError
from ..validation import validate_module, validate_name
from .client import api_client, patient_startup
from .deployment import START_TIMEOUT, check_name
from .worker import DISPATCHER_FLOW, PrefectWorker

ENTRYPOINT = "fifoflow.prefect.deploy.fifoflow_dispatcher"
SET_WORKDIR = "prefect.deployments.steps.set_working_directory"


@flow(name=DISPATCHER_FLOW, log_prints=True, validate_parameters=False)
def fifoflow_dispatcher(
    modules: list[str],
    queues: list[str] | None = None,
    pools: list[str] | None = None,
    concurrency: int = 1,
    grace: float = 30.0,
    url: str | None = None,
    deployment: str | None = None,
    work_queue: str | None = None,
    start_timeout: float = START_TIMEOUT,
    burst: bool = False,
    workdir: str | None = None,
) -> int:
    """A fifoflow worker working its queues as this flow run (a deployed dispatcher)."""
    if not logging.getLogger().handlers:  # fifoflow's lines in the run's process output
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fifoflow").setLevel(logging.INFO)
    if workdir and workdir not in sys.path:  # the jobs' modules, as on the deploying host
        sys.path.insert(0, workdir)
    worker = PrefectWorker(
        queues,
        modules,
        concurrency,
        pools,
        url=url,
        grace=grace,
        deployment=deployment,
        work_queue=work_queue,
        start_timeout=start_timeout,
    )
    return worker.run(burst=burst)


def deploy(
    name: str,
    work_pool: str,
    modules: list[str],
    *,
    work_queue: str | None = None,
    queues: list[str] | None = None,
    pools: list[str] | None = None,
    concurrency: int = 1,
    grace: float = 30.0,
    url: str | None = None,
    deployment: str | None = None,
    workdir: str | None = None,
) -> UUID:
    """Create (or update) the deployment ``fifoflow-dispatcher/NAME`` on ``work_pool``."""
    validate_name("deployment name", name)
    if not modules:
        raise UsageError("a dispatcher needs at least one module its targets may come from")
    if concurrency < 1:
        raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
    params: dict[str, Any] = {
        "modules": [validate_module(m) for m in modules],
        "queues": [validate_name("queue", q) for q in queues] if queues else None,
        "pools": [validate_name("pool", p) for p in pools] if pools else None,
        "concurrency": concurrency,
        "grace": grace,
        "url": url,
        "deployment": check_name(deployment) if deployment else None,
        "workdir": workdir or os.getcwd(),
    }
    with patient_startup(), api_client() as client:
        try:
            client.read_work_pool(work_pool)
        except httpx.HTTPError as e:
            raise FifoflowError(f"cannot reach the Prefect API: {e}") from None
        except ObjectNotFound:
            raise UsageError(
                f"no Prefect work pool {work_pool!r} (create one: "
                f"prefect work-pool create {work_pool} --type process)"
            ) from None
        flow_id = client.create_flow_from_name(DISPATCHER_FLOW)
        return client.create_deployment(
            flow_id=flow_id,
            name=name,
            work_pool_name=work_pool,
            work_queue_name=work_queue,
            entrypoint=ENTRYPOINT,
            parameters={k: v for k, v in params.items() if v is not None},
            parameter_openapi_schema=parameter_schema(fifoflow_dispatcher).model_dump_for_openapi(),
            pull_steps=[{SET_WORKDIR: {"directory": params["workdir"]}}],
            tags=["fifoflow"],
            description="A fifoflow worker: each job it runs is a child flow run of this one.",
            enforce_parameter_schema=False,
        )
