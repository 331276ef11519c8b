"""``fifoflow deploy``: the dispatcher as a Prefect deployment on a work pool."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from .common import out


def deploy(
    modules: Annotated[list[str], typer.Argument(help="Modules whose targets it may run.")],
    name: Annotated[str, typer.Option(help="Deployment name (fifoflow-dispatcher/NAME).")],
    pool: Annotated[str, typer.Option(help="The Prefect work pool that runs the dispatcher.")],
    work_queue: Annotated[
        str | None, typer.Option(help="The work pool's queue for the dispatcher's runs.")
    ] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="fifoflow queue(s) it works.")
    ] = None,
    job_pool: Annotated[
        list[str] | None, typer.Option("--job-pool", help="fifoflow pool(s) it serves.")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Slots.")] = 1,
    grace: Annotated[float, typer.Option(min=0, help="Seconds running jobs get on a stop.")] = 30.0,
    url: Annotated[
        str | None, typer.Option(help="The fifoflow server the dispatcher uses [FIFOFLOW_URL].")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="Run each job as a run of this FLOW/DEPLOYMENT.")
    ] = None,
) -> None:
    """Register the dispatcher as a Prefect deployment: start, schedule and stop it in Prefect."""
    try:
        from ..prefect.deploy import deploy as register
    except ImportError as e:
        raise UsageError(f"deploy needs Prefect: pip install 'fifoflow[prefect]' ({e})") from None
    from ..settings import get_settings

    deployment_id = register(
        name,
        pool,
        modules,
        work_queue=work_queue,
        queues=queue,
        pools=job_pool,
        concurrency=concurrency,
        grace=grace,
        url=url or get_settings().url,
        deployment=deployment,
    )
    out.print(f"deployment fifoflow-dispatcher/{name} ({deployment_id}) on work pool {pool}")
    out.print(f"start it: prefect deployment run 'fifoflow-dispatcher/{name}'", markup=False)
