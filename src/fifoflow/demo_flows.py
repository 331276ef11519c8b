"""The toy flows ``fifoflow demo`` pushes: a pretend training run per parameter set.

Nothing is trained: ``train`` sleeps 0.2-1 s (in "epochs"), logs and prints like a real
training flow would, scores the parameters with a task, and returns a metric. Two parameter
sets misbehave on purpose: a learning rate of 1 or more "diverges" on every attempt (the
job ends dead after its retries), and ``flaky=True`` fails on fifoflow's first attempt only
(the job succeeds on its retry).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from prefect import flow, get_run_logger, task

from .prefect import current_job


def _fraction(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parameters."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@task
def evaluate(lr: float, batch_size: int, seed: int) -> float:
    """Validation accuracy of the pretend model: best near lr=0.01 and batch_size=32."""
    score = 0.93 - 0.06 * abs(math.log10(lr) + 2) - 0.02 * abs(math.log2(batch_size / 32))
    return round(score + 0.02 * (_fraction("noise", lr, batch_size, seed) - 0.5), 4)


@flow(name="train", log_prints=True)
def train(
    lr: float, batch_size: int, seed: int = 0, epochs: int = 3, flaky: bool = False
) -> dict[str, Any]:
    """One pretend training run; returns its validation accuracy."""
    logger = get_run_logger()
    job = current_job()
    logger.info(
        "training lr=%g batch_size=%d seed=%d (fifoflow job %s, attempt %s)",
        lr,
        batch_size,
        seed,
        job.id if job else "-",
        job.attempt if job else "-",
    )
    if flaky and job is not None and job.attempt == 1:
        raise ConnectionError("lost the (pretend) GPU on the first attempt; a retry will do")
    seconds = 0.2 + 0.8 * _fraction("time", lr, batch_size, seed)
    loss = 2.3
    for epoch in range(1, epochs + 1):
        time.sleep(seconds / epochs)
        if lr >= 1.0:
            raise FloatingPointError(
                f"loss diverged to inf in epoch {epoch} (lr={lr:g} is too high)"
            )
        loss *= 0.55 + 0.1 * _fraction("loss", lr, epoch)
        print(f"epoch {epoch}/{epochs}: loss {loss:.3f}")
    accuracy = evaluate(lr, batch_size, seed)
    logger.info("validation accuracy %.4f", accuracy)
    return {"accuracy": accuracy, "seconds": round(seconds, 2)}
