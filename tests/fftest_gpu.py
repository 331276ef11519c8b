"""Targets for resource tests: each records the devices its process was given."""

from __future__ import annotations

import json
import os
import time


def record(out: str, hold: float = 0.3) -> dict[str, object]:
    """Append {devices, resources, start, end, pid} to ``out`` (JSON lines)."""
    start = time.time()
    time.sleep(hold)
    row = {
        "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "resources": json.loads(os.environ.get("FIFOFLOW_RESOURCES", "null")),
        "start": start,
        "end": time.time(),
        "pid": os.getpid(),
    }
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row
