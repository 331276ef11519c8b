"""Resources: what a job needs and what a worker has (docs/resources.md).

A job declares amounts by name (``{"gpu": 2, "mem_gb": 16, "cpu": 4}``; nothing declared:
one slot's worth). A worker declares its capacity: GPU ids (``--gpus auto|0,1,2,3``),
``cpu``, ``mem_gb`` and any custom amount, plus ``slots``, how many jobs it runs at once.
The server picks what fits (``scripts/_resources.lua``); this module parses and checks
the declarations, detects GPUs, and says what a job's process is given
(``CUDA_VISIBLE_DEVICES``, ``FIFOFLOW_RESOURCES``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

#: Resource names: lower-case letters, digits and '_'.
NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
#: Every job takes one of its worker's slots; no one declares it.
SLOTS = "slots"
GPU = "gpu"
#: The environment variable a job's process reads its share from (JSON).
ENV = "FIFOFLOW_RESOURCES"
MEM_UNITS = {"": 1.0, "g": 1.0, "gb": 1.0, "gi": 1.0, "m": 1 / 1024, "mb": 1 / 1024, "t": 1024.0}
MEM_UNITS |= {"tb": 1024.0, "ti": 1024.0, "mi": 1 / 1024, "gib": 1.0, "mib": 1 / 1024}


def amount(name: str, value: object) -> float:
    """A non-negative, finite amount (int or float; text as from the CLI)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UsageError(f"resource {name}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"resource {name}: amount must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"resource {name}: amount must be >= 0 and finite, not {value!r}")
    return float(value)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"invalid resource name {name!r}: use 1-32 of a-z, 0-9 and '_'")
    if name == SLOTS:
        raise UsageError("'slots' is not declared: every job takes one slot of its worker")
    return name


def validate_need(resources: Mapping[str, Any] | None) -> str:
    """A job's declaration as the JSON the server stores ('' = one slot's worth)."""
    if resources is None:
        return ""
    if not isinstance(resources, Mapping):
        raise UsageError(f"resources must be a mapping of name to amount, not {resources!r}")
    need: dict[str, float | int] = {}
    for name, value in resources.items():
        a = amount(check_name(name), value)
        if name == GPU and a != int(a):
            raise UsageError(f"resource gpu: a job needs whole GPUs, not {a:g}")
        if a > 0:
            need[name] = int(a) if a == int(a) else a
    return json.dumps(need, sort_keys=True, separators=(",", ":")) if need else ""


def parse_mem(text: str) -> float:
    """``16G``, ``512M``, ``1.5T``, ``64`` (GB) -> gigabytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in MEM_UNITS:
        raise UsageError(f"invalid memory {text!r}: use e.g. 16G, 512M or 1.5T")
    return amount("mem_gb", float(m.group(1)) * MEM_UNITS[unit])


def parse_pairs(pairs: Sequence[str]) -> dict[str, float]:
    """``--resource licence=2`` (repeatable) -> {"licence": 2.0}."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--resource {pair!r}: expected NAME=AMOUNT, e.g. licence=2")
        out[check_name(name.strip())] = amount(name, value.strip())
    return out


def detect_gpus() -> list[str]:
    """GPU ids this machine shows: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``,
    else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def parse_gpus(text: str) -> list[str]:
    """``auto``, ``none``/``0`` (no GPUs) or a list of ids ``0,1,2,3``."""
    text = text.strip()
    if text == "auto":
        return detect_gpus()
    if text in ("", "none", "0"):
        return []
    ids = [g.strip() for g in text.split(",")]
    if any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_:\-]{0,63}", g) for g in ids) or len(
        set(ids)
    ) != len(ids):
        raise UsageError(f"invalid --gpus {text!r}: 'auto' or distinct ids like 0,1,2,3")
    return ids


@dataclass(frozen=True)
class Capacity:
    """What a worker has: GPU ids, amounts by name, and ``slots``, jobs at once."""

    gpu_ids: tuple[str, ...] = ()
    amounts: Mapping[str, float] = field(default_factory=dict)
    slots: int = 0  # 0: the default, see ``default_slots``

    @classmethod
    def declare(
        cls,
        gpus: Sequence[str] = (),
        cpus: float | None = None,
        mem_gb: float | None = None,
        other: Mapping[str, float] | None = None,
    ) -> Capacity:
        amounts = {check_name(k): amount(k, v) for k, v in (other or {}).items()}
        if GPU in amounts:
            raise UsageError("give GPUs as ids (--gpus 0,1 or auto), not as --resource gpu=N")
        amounts["cpu"] = amount("cpu", (os.cpu_count() or 1) if cpus is None else cpus)
        if mem_gb is not None:
            amounts["mem_gb"] = amount("mem_gb", mem_gb)
        return cls(tuple(gpus), amounts)

    def default_slots(self) -> int:
        """Jobs at once when the worker names no --concurrency: one per GPU and per CPU."""
        return max(1, len(self.gpu_ids) + int(self.amounts.get("cpu", 0)))

    def as_json(self, slots: int) -> str:
        cap = {**self.amounts, GPU: len(self.gpu_ids), SLOTS: slots}
        return json.dumps(cap, sort_keys=True)

    def describe(self) -> str:
        parts = [f"gpu={','.join(self.gpu_ids)}"] if self.gpu_ids else []
        parts += [f"{k}={v:g}" for k, v in sorted(self.amounts.items())]
        return " ".join(parts)


def share(alloc: str) -> dict[str, Any]:
    """A running job's share as its process sees it in ``FIFOFLOW_RESOURCES``."""
    if not alloc:
        return {}
    a = json.loads(alloc)
    out: dict[str, Any] = {k: v for k, v in a.get("need", {}).items() if k != SLOTS}
    gpu_ids = a.get("gpu_ids") or []
    if isinstance(gpu_ids, list) and gpu_ids:
        out["gpu_ids"] = gpu_ids
    return out


def job_env(alloc: str) -> dict[str, str]:
    """The environment of a job's process: exactly its GPUs (none: an empty list), and its
    share as JSON."""
    s = share(alloc)
    return {"CUDA_VISIBLE_DEVICES": ",".join(s.get("gpu_ids", [])), ENV: json.dumps(s)}


def fmt_amounts(amounts: Mapping[str, float], names: Sequence[str]) -> str:
    return " ".join(f"{n}={amounts.get(n, 0):g}" for n in names)


def check_capacity(capacity: Capacity, queues: Sequence[str], processes: bool) -> None:
    """A worker's capacity is kept in its queue's slot, and GPUs are pinned per process."""
    if len(queues) != 1:
        raise UsageError(
            "a worker with declared capacity serves one queue (its capacity and use are "
            "kept with that queue): give one --queue"
        )
    if capacity.gpu_ids and not processes:
        raise UsageError(
            "--gpus needs --processes: CUDA_VISIBLE_DEVICES pins a process, so each job "
            "runs in a process of its own (thread slots share one process)"
        )
