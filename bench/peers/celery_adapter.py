"""Celery under the bench protocol: Redis broker, no result backend, an in-process worker
(``solo`` pool for one slot, ``threads`` for more), mingle/gossip/heartbeat off."""

from __future__ import annotations

import os

import bench_targets
import celery
from _common import QUEUE, Adapter, Pusher, WorkerHandle, main
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_URL"])
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)
TASKS = {kind: app.task(name=kind)(fn) for kind, fn in bench_targets.KINDS.items()}


class CeleryAdapter(Adapter):
    system = "celery"

    def version(self) -> str:
        return celery.__version__

    def pusher(self, cfg: dict) -> Pusher:
        def fill(ids: list[int], kind: str) -> None:
            # Untimed: one producer for the whole batch (what a loop of .delay() reuses anyway).
            with app.producer_or_acquire() as producer:
                for i in ids:
                    TASKS[kind].apply_async(kwargs={"i": i}, producer=producer)

        return Pusher(single=lambda i, kind: TASKS[kind].delay(i=i), fill=fill)

    def worker(self, cfg: dict) -> WorkerHandle:
        n = int(cfg["concurrency"])
        argv = [
            "worker",
            "--pool",
            "solo" if n == 1 else "threads",
            "--concurrency",
            str(n),
            "--loglevel",
            "WARNING",
            "--queues",
            QUEUE,
            "--hostname",
            f"bench{cfg['slot']}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ]
        return WorkerHandle(run=lambda: app.worker_main(argv))


if __name__ == "__main__":
    main(CeleryAdapter())
