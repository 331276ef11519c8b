"""GPU smoke test: jobs of 1 GPU and of every GPU run pinned, and print what each saw.

    cd examples/gpu && python smoke.py

Needs a machine with NVIDIA GPUs (``nvidia-smi -L`` lists them, or CUDA_VISIBLE_DEVICES
names them); without one it says so and exits 0 without running anything. It uses the
server in FIFOFLOW_URL, else the embedded one (started if needed), and a fresh queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from fifoflow import Queue
from fifoflow.resources import detect_gpus


def main() -> int:
    gpus = detect_gpus()
    if not gpus:
        print(
            "SKIP: no GPU on this machine (nvidia-smi lists none and CUDA_VISIBLE_DEVICES "
            "is not set): nothing to pin. The tests use simulated ids instead."
        )
        return 0
    queue = "gpu-smoke-" + uuid.uuid4().hex[:6]
    q = Queue(queue)
    sizes = [1] * len(gpus) + [len(gpus)] + [1]
    jobs = [
        q.push("gpu_jobs:seen", {"label": f"job {i} needs {g} GPU(s)"}, resources={"gpu": g})
        for i, g in enumerate(sizes)
    ]
    print(f"{len(gpus)} GPU(s): {','.join(gpus)}; {len(jobs)} jobs on queue {queue}")
    worker = [sys.executable, "-m", "fifoflow", "worker", "gpu_jobs", "-q", queue]
    worker += ["--gpus", "auto", "--processes", "--burst", "--log-level", "WARNING"]
    code = subprocess.run(worker, cwd=os.path.dirname(os.path.abspath(__file__))).returncode
    if code != 0:
        print(f"the worker exited with {code}")
        return 1
    for job in jobs:
        print(json.dumps(job.result(timeout=60), indent=None))
    q.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
