"""A train → evaluate → report DAG: three trainings fan out, each is evaluated, and one
report gathers every evaluation (its `results`, in push order).

    cd examples/dag
    python pipeline.py            # pushes the DAG (queue "dag")
    fifoflow worker pipeline --queue dag --concurrency 3 --burst

The same DAG as a file: `fifoflow push-dag dag.json --queue dag`.
"""

from __future__ import annotations

import random
from typing import Any

from fifoflow import Queue


def train(lr: float, seed: int = 0) -> dict[str, Any]:
    """A pretend training run: a 'model' is its parameters and a made-up loss."""
    rng = random.Random(f"{lr}-{seed}")
    return {"lr": lr, "loss": round(abs(lr - 0.01) * 10 + rng.random() / 10, 4)}


def evaluate(input: dict[str, Any]) -> dict[str, Any]:
    """Scores the model its parent trained (a chain passes the result as `input`)."""
    return {**input, "accuracy": round(1 - input["loss"], 4)}


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Gathers every evaluation, in push order, and picks the best."""
    best = max(results, key=lambda r: r["accuracy"])
    return {"runs": len(results), "best_lr": best["lr"], "best_accuracy": best["accuracy"]}


def push(q: Queue) -> Any:
    evals = []
    for lr in (0.1, 0.01, 0.001):
        trained = q.push("pipeline:train", {"lr": lr})
        evals.append(q.push("pipeline:evaluate", depends_on=[trained], gather="input"))
    return q.push("pipeline:report", depends_on=evals, gather=True)


if __name__ == "__main__":
    job = push(Queue("dag"))
    print(f"pushed; the report is job {job.id}: fifoflow job {job.id} --queue dag")
