"""Commands that add jobs: push (one per parameter set, with options and dependencies)
and push-dag (a small DAG from a JSON file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..resources import amount, parse_mem, parse_pairs
from ..settings import get_settings
from ..validation import encode_params, validate_target
from ..workflows import load_dag, push_dag
from .common import JsonOpt, QueueOpt, RetriesOpt, TimeoutOpt, emit_json, open_queue, out, progress


def _parse_object(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise UsageError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    try:
        encode_params(doc, get_settings().max_params_bytes)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: {e}") from None
    return doc


def _read_params_file(path: str) -> list[dict[str, Any]]:
    """JSON Lines, validated whole before anything is queued; blank lines are skipped."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read params file {path!r}: {e}") from None
    params = [
        _parse_object(line, f"{path} line {i}") for i, line in enumerate(lines, 1) if line.strip()
    ]
    if not params:
        raise UsageError(f"params file {path!r} has no parameter sets")
    return params


def _resources(
    gpus: int | None, mem: str | None, cpus: float | None, pairs: list[str]
) -> dict[str, float] | None:
    """The push's --gpus/--mem/--cpus/--resource as one declaration (None: none given)."""
    need: dict[str, float] = parse_pairs(pairs)
    for name, value in (("gpu", gpus), ("cpu", cpus)):
        if value is not None:
            if name in need:
                raise UsageError(f"give {name} once: --{name}s, not also --resource {name}=")
            need[name] = amount(name, value)
    if mem is not None:
        need["mem_gb"] = parse_mem(mem)
    return need or None


def push(
    target: Annotated[str, typer.Argument(help="package.module:function")],
    params: Annotated[str | None, typer.Option("--params", "-p", help="JSON object.")] = None,
    params_file: Annotated[
        str | None, typer.Option("--params-file", "-f", help="JSON Lines file, or - for stdin.")
    ] = None,
    queue: QueueOpt = None,
    priority: Annotated[int, typer.Option(help="Higher starts first.")] = 0,
    pool: Annotated[str, typer.Option(help="Pool of workers that may run it.")] = "default",
    key: Annotated[str | None, typer.Option(help="De-duplication key.")] = None,
    delay: Annotated[float | None, typer.Option(help="Seconds before it may start.")] = None,
    retries: RetriesOpt = None,
    timeout: TimeoutOpt = None,
    max_lost: Annotated[
        int | None, typer.Option(help="Lost workers tolerated before it is dead [2].")
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", help="A job (id) that must succeed first; repeatable."),
    ] = None,
    gather: Annotated[
        bool, typer.Option(help="Pass the parents' results as the argument `results`.")
    ] = False,
    on_parent_failure: Annotated[
        str, typer.Option(help="dead (default) or run: what a failed parent means.")
    ] = "dead",
    job_id: Annotated[
        str | None, typer.Option("--id", help="An id of your choosing (one job only).")
    ] = None,
    result_ttl: Annotated[
        int | None, typer.Option(min=1, help="Seconds its record is kept once finished.")
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs each job needs.")] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="Memory each job needs: 16G.")] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPUs each job needs.")] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Any other amount each job needs: NAME=N; repeatable."),
    ] = None,
    expected: Annotated[
        float | None,
        typer.Option("--expected", help="Seconds a job expects to run (for reservations)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="A tag (on its Prefect child flow runs); repeatable."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Queue one job per parameter set; print one job id per line (--json: a list of ids)."""
    validate_target(target)
    if params is not None and params_file is not None:
        raise UsageError("give --params or --params-file, not both")
    if params_file is not None:
        sets = _read_params_file(params_file)
    else:
        sets = [_parse_object(params, "--params") if params is not None else {}]
    q = open_queue(queue)
    options: dict[str, Any] = dict(
        priority=priority,
        pool=pool,
        key=key,
        delay=delay,
        retries=retries,
        timeout=timeout,
        max_lost=max_lost,
        depends_on=depends_on,
        gather=gather,
        on_parent_failure=on_parent_failure,
        job_id=job_id,
        result_ttl=result_ttl,
        resources=_resources(gpus, mem, cpus, resource or []),
        expected_seconds=expected,
        tags=tag,
    )
    with progress("pushing") as bar:
        task = bar.add_task("push", total=len(sets))
        jobs = q.push_many(target, sets, on_batch=lambda n: bar.advance(task, n), **options)
    if json_:
        emit_json([j.id for j in jobs])
    else:
        sys.stdout.write("".join(j.id + "\n" for j in jobs))


def push_dag_command(
    file: Annotated[str, typer.Argument(metavar="FILE", help="JSON file, or - for stdin.")],
    queue: QueueOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Push a small DAG: {"jobs": [{"id", "target", "params", "depends_on", ...}]}."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {file!r}: {e}") from None
    dag = load_dag(text, file)
    pushed = push_dag(open_queue(queue), dag)
    if json_:
        emit_json({name: job.id for name, job in pushed.items()})
    else:
        for name, job in pushed.items():
            out.print(f"{name}\t{job.id}", markup=False, highlight=False)
