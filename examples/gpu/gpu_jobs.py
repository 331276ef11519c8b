"""The job of the GPU smoke test: report what devices this job's process can see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any


def seen(label: str) -> dict[str, Any]:
    """CUDA_VISIBLE_DEVICES, the share fifoflow gave (FIFOFLOW_RESOURCES), what nvidia-smi
    lists for this process, and torch's device count when torch is installed."""
    out: dict[str, Any] = {
        "label": label,
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "share": json.loads(os.environ.get("FIFOFLOW_RESOURCES", "null")),
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        # nvidia-smi lists every GPU of the machine whatever CUDA_VISIBLE_DEVICES says:
        # select the visible ones by id for the record.
        ids = out["CUDA_VISIBLE_DEVICES"] or ""
        query = [smi, "--query-gpu=index,uuid,name,memory.used", "--format=csv,noheader"]
        if ids:
            query.append(f"--id={ids}")
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = done.stdout.strip().splitlines()
    try:
        import torch  # optional

        out["torch_device_count"] = torch.cuda.device_count()
        out["torch_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    except ImportError:
        out["torch_device_count"] = None
    return out
