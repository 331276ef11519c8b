"""Push the pools example's jobs: each kind of work into its own pool of queue "pools"."""

from __future__ import annotations

from fifoflow import Queue

QUEUE = "pools"


def main() -> None:
    q = Queue(QUEUE)
    gpu = q.push_many(
        "flows:fine_tune",
        [{"model": m, "epochs": 3} for m in ("small", "base", "large")],
        pool="gpu",
    )
    cpu = q.push_many("flows:tokenize", [{"shard": i} for i in range(12)], pool="cpu")
    memory = q.push_many(
        "flows:build_index",
        [{"name": n, "size_gb": s} for n, s in (("titles", 2.0), ("bodies", 12.5))],
        pool="memory",
    )
    # An urgent job jumps the line of its pool (higher priority first, then FIFO).
    urgent = q.push("flows:tokenize", {"shard": 99}, pool="cpu", priority=10)
    print(
        f"queue {QUEUE!r}: {len(gpu)} gpu, {len(cpu) + 1} cpu ({urgent.id} urgent), "
        f"{len(memory)} memory jobs"
    )


if __name__ == "__main__":
    main()
