"""The job of bench/resources_sweep.py: sleep for its run time and check the GPUs its
process was pinned to (CUDA_VISIBLE_DEVICES), then append what it saw to a JSON Lines file."""

from __future__ import annotations

import json
import os
import time


def run(seconds: float, gpus: int, out: str, mode: str) -> bool:
    start = time.time()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in (visible or "").split(",") if d]
    # Pinned modes: exactly its GPUs, distinct, among the worker's 8 fake ids.
    pinned_ok = len(devices) == gpus and len(set(devices)) == gpus
    pinned_ok = pinned_ok and all(d in {str(i) for i in range(8)} for d in devices)
    time.sleep(seconds)
    row = {
        "mode": mode,
        "gpus": gpus,
        "seconds": seconds,
        "devices": devices if visible is not None else None,
        "pinned_ok": pinned_ok if visible is not None else None,
        "start": start,
        "end": time.time(),
    }
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return True
