"""The seed pattern (seed.py) under the bench protocol; needs only redis-py."""

from __future__ import annotations

from _common import QUEUE, Adapter, Pusher, WorkerHandle, main
from seed import SeedQueue, SeedWorker


class SeedAdapter(Adapter):
    system = "seed"

    def version(self) -> str:
        return "bench/peers/seed.py"

    def pusher(self, cfg: dict) -> Pusher:
        q = SeedQueue(QUEUE, cfg["url"])
        return Pusher(
            single=lambda i, kind: q.push(f"bench_targets:{kind}", {"i": i}),
            bulk=lambda ids, kind: q.push_many(f"bench_targets:{kind}", [{"i": i} for i in ids]),
        )

    def worker(self, cfg: dict) -> WorkerHandle:
        w = SeedWorker(QUEUE, cfg["url"], concurrency=int(cfg["concurrency"]))
        return WorkerHandle(run=w.run, stop=w.stop)


if __name__ == "__main__":
    main(SeedAdapter())
