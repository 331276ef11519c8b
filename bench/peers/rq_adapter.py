"""RQ under the bench protocol: SimpleWorker (no fork per job), one job at a time."""

from __future__ import annotations

import bench_targets
import rq
from _common import QUEUE, Adapter, Pusher, WorkerHandle, chunks, main
from redis import Redis
from rq import Queue, SimpleWorker


class RQAdapter(Adapter):
    system = "rq"

    def version(self) -> str:
        return rq.__version__

    def pusher(self, cfg: dict) -> Pusher:
        q = Queue(QUEUE, connection=Redis.from_url(cfg["url"]))

        def bulk(ids: list[int], kind: str) -> None:
            fn = bench_targets.KINDS[kind]
            for batch in chunks(ids, 1000):
                q.enqueue_many([Queue.prepare_data(fn, kwargs={"i": i}) for i in batch])

        return Pusher(single=lambda i, kind: q.enqueue(bench_targets.KINDS[kind], i=i), bulk=bulk)

    def worker(self, cfg: dict) -> WorkerHandle:
        if int(cfg["concurrency"]) != 1:
            raise SystemExit("RQ's SimpleWorker runs one job at a time")
        conn = Redis.from_url(cfg["url"])
        w = SimpleWorker([Queue(QUEUE, connection=conn)], connection=conn)
        burst = bool(cfg.get("burst"))
        return WorkerHandle(
            run=lambda: w.work(burst=burst, logging_level="WARNING", with_scheduler=False)
        )


if __name__ == "__main__":
    main(RQAdapter())
