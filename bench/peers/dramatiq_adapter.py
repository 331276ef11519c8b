"""Dramatiq under the bench protocol: RedisBroker, an in-process Worker with N threads."""

from __future__ import annotations

import os
import threading

import bench_targets
import dramatiq
from _common import QUEUE, Adapter, Pusher, WorkerHandle, main
from dramatiq.brokers.redis import RedisBroker

# The driver passes the server URL in BENCH_URL too: actors bind to the broker at import.
broker = RedisBroker(url=os.environ["BENCH_URL"])
dramatiq.set_broker(broker)
ACTORS = {
    kind: dramatiq.actor(fn, actor_name=kind, queue_name=QUEUE, max_retries=0)
    for kind, fn in bench_targets.KINDS.items()
}


class DramatiqAdapter(Adapter):
    system = "dramatiq"

    def version(self) -> str:
        return dramatiq.__version__

    def pusher(self, cfg: dict) -> Pusher:
        return Pusher(single=lambda i, kind: ACTORS[kind].send(i=i))

    def worker(self, cfg: dict) -> WorkerHandle:
        w = dramatiq.Worker(broker, worker_threads=int(cfg["concurrency"]))
        stopped = threading.Event()

        def run() -> None:
            w.start()
            stopped.wait()
            w.stop(timeout=5000)

        return WorkerHandle(run=run, stop=stopped.set)


if __name__ == "__main__":
    main(DramatiqAdapter())
