"""The flows of the pools example: one per kind of machine resource.

A job's pool says which workers may run it: ``gpu`` jobs only go to workers started with
``--pool gpu``, and so on. Within a pool, jobs start in the order they were pushed (higher
priority first), whichever worker of the pool is free first.
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger


@flow(log_prints=True)
def fine_tune(model: str, epochs: int) -> dict[str, object]:
    """GPU work: one job at a time per GPU worker."""
    get_run_logger().info("fine-tuning %s for %d epochs on pid %d", model, epochs, os.getpid())
    for epoch in range(1, epochs + 1):
        time.sleep(0.3)
        print(f"{model}: epoch {epoch}/{epochs} done")
    return {"model": model, "epochs": epochs, "pid": os.getpid()}


@flow(log_prints=True)
def tokenize(shard: int) -> dict[str, int]:
    """CPU work: many at once on the CPU worker."""
    time.sleep(0.2)
    print(f"shard {shard} tokenized")
    return {"shard": shard, "tokens": 1000 + 17 * shard, "pid": os.getpid()}


@flow(log_prints=True)
def build_index(name: str, size_gb: float) -> dict[str, object]:
    """Memory-hungry work: few at once, on the big-memory worker."""
    get_run_logger().info("building index %s (%.1f GB in memory)", name, size_gb)
    time.sleep(0.5)
    return {"index": name, "size_gb": size_gb, "pid": os.getpid()}
