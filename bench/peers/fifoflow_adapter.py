"""fifoflow under the bench protocol (see _common.py); runs with /work/main/.venv."""

from __future__ import annotations

from _common import QUEUE, Adapter, Pusher, WorkerHandle, main

import fifoflow
from fifoflow import Queue, Worker


class FifoflowAdapter(Adapter):
    system = "fifoflow"

    def version(self) -> str:
        return fifoflow.__version__

    def pusher(self, cfg: dict) -> Pusher:
        q = Queue(QUEUE, url=cfg["url"])
        return Pusher(
            single=lambda i, kind: q.push(f"bench_targets:{kind}", {"i": i}),
            bulk=lambda ids, kind: q.push_many(f"bench_targets:{kind}", [{"i": i} for i in ids]),
            close=q.close,
        )

    def worker(self, cfg: dict) -> WorkerHandle:
        # Logging stays unconfigured: the root logger's WARNING level skips per-job INFO lines.
        w = Worker(
            queues=[QUEUE],
            modules=["bench_targets"],
            concurrency=int(cfg["concurrency"]),
            url=cfg["url"],
        )
        burst = bool(cfg.get("burst"))
        return WorkerHandle(run=lambda: w.run(burst=burst), stop=w.stop)


if __name__ == "__main__":
    main(FifoflowAdapter())
