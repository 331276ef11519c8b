"""Workflows over dependencies: chains, and DAGs described in a JSON file.

A dependency is a push option (``Queue.push(..., depends_on=[...], gather=...)``): the
scripts keep the bookkeeping. This module builds on it: ``chain`` pushes steps that each get
the previous step's result as ``input``, and ``load_dag`` / ``push_dag`` read, check and
push a small DAG (``fifoflow push-dag FILE``), refusing cycles and unknown ids with the
line of the job at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .queue import Job, Queue
from .validation import encode_params, integer, seconds, validate_name, validate_target

#: Options a DAG job may set, with the checks ``Queue.push`` would make.
DAG_OPTIONS = {
    "priority",
    "pool",
    "retries",
    "timeout",
    "key",
    "delay",
    "max_lost",
    "gather",
    "on_parent_failure",
    "result_ttl",
    "job_id",
}


def chain(
    q: Queue, steps: Sequence[tuple[str, Mapping[str, Any] | None]], **options: Any
) -> list[Job]:
    """Push ``steps`` (target, params) so that each runs after the one before succeeds and
    gets its result as the keyword argument ``input``; ``options`` apply to every step.
    Returns the jobs, first step first."""
    jobs: list[Job] = []
    for target, params in steps:
        after: dict[str, Any] = {"depends_on": [jobs[-1]], "gather": "input"} if jobs else {}
        jobs.append(q.push(target, params, **options, **after))
    return jobs


@dataclass
class DagJob:
    name: str
    target: str
    line: int
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def _lines(text: str) -> list[int]:
    """The line each element of the top-level "jobs" array starts on."""
    match = re.search(r'"jobs"\s*:\s*\[', text)
    if not match:
        return []
    decoder, pos = json.JSONDecoder(), match.end()
    lines: list[int] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)


def load_dag(text: str, where: str = "dag") -> list[DagJob]:
    """The jobs of a DAG file, checked whole, in an order that pushes parents first."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list) or not doc["jobs"]:
        raise UsageError(f'{where}: expected an object with a non-empty "jobs" list')
    lines = _lines(text)
    jobs: dict[str, DagJob] = {}
    for i, node in enumerate(doc["jobs"]):
        at = f"{where} line {lines[i] if i < len(lines) else '?'}"
        jobs_node = _node(node, at, i)
        if jobs_node.name in jobs:
            raise UsageError(f"{at}: job id {jobs_node.name!r} is used twice")
        jobs_node.line = lines[i] if i < len(lines) else 0
        jobs[jobs_node.name] = jobs_node
    for j in jobs.values():
        for parent in j.depends_on:
            if parent not in jobs:
                raise UsageError(
                    f"{where} line {j.line}: {j.name!r} depends on unknown id {parent!r}"
                )
    return _topological(jobs, where)


def _node(node: object, at: str, index: int) -> DagJob:
    if not isinstance(node, dict):
        raise UsageError(f"{at}: each job must be an object")
    name, target = node.get("id", f"#{index + 1}"), node.get("target")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{at}: id must be a non-empty string")
    try:
        validate_target(target)
        params = node.get("params") or {}
        encode_params(params, 1 << 30)
        depends = node.get("depends_on") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise UsageError("depends_on must be a list of job ids")
        options = {
            k: v for k, v in node.items() if k not in ("id", "target", "params", "depends_on")
        }
        unknown = set(options) - DAG_OPTIONS
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(sorted(unknown))}")
        _check_options(options)
    except (UsageError, TypeError, ValueError) as e:
        raise UsageError(f"{at}: job {name!r}: {e}") from None
    return DagJob(name, str(target), 0, dict(params), list(depends), options)


def _check_options(options: dict[str, Any]) -> None:
    for k in ("priority", "retries", "max_lost", "result_ttl"):
        if k in options:
            integer(k, options[k], minimum=None if k == "priority" else 0)
    for k in ("timeout", "delay"):
        if k in options:
            seconds(k, options[k], allow_zero=k == "delay")
    if "pool" in options:
        validate_name("pool", options["pool"])


def _topological(jobs: dict[str, DagJob], where: str) -> list[DagJob]:
    order: list[DagJob] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in jobs:
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            name, i = stack.pop()
            if i == 0:
                if state.get(name) == 2:
                    continue
                state[name] = 1
            parents = jobs[name].depends_on
            if i < len(parents):
                stack.append((name, i + 1))
                parent = parents[i]
                if state.get(parent) == 1:
                    raise UsageError(
                        f"{where} line {jobs[parent].line}: a cycle through {parent!r} and {name!r}"
                    )
                if state.get(parent) != 2:
                    stack.append((parent, 0))
            else:
                state[name] = 2
                order.append(jobs[name])
    return order


def push_dag(q: Queue, dag: Sequence[DagJob]) -> dict[str, Job]:
    """Push a checked DAG, parents first; the jobs by their ids in the file."""
    pushed: dict[str, Job] = {}
    for j in dag:
        depends = [pushed[p] for p in j.depends_on]
        pushed[j.name] = q.push(j.target, j.params, depends_on=depends or None, **j.options)
    return pushed
