"""saq under the bench protocol: asyncio worker with N concurrent jobs, Redis queue."""

from __future__ import annotations

import asyncio
import importlib.metadata
import threading

import bench_targets
from _common import QUEUE, Adapter, Pusher, WorkerHandle, chunks, main
from saq import Queue, Worker


async def noop(ctx: dict, *, i: int = 0) -> None:
    bench_targets.noop(i)


async def sleep5(ctx: dict, *, i: int = 0) -> None:
    await bench_targets.sleep5_async(i)


async def latency(ctx: dict, *, i: int = 0) -> None:
    bench_targets.latency(i)


class SaqAdapter(Adapter):
    system = "saq"

    def version(self) -> str:
        return importlib.metadata.version("saq")

    def pusher(self, cfg: dict) -> Pusher:
        runner = asyncio.Runner()
        q = Queue.from_url(cfg["url"], name=QUEUE)
        runner.run(q.connect())

        def single(i: int, kind: str) -> None:
            runner.run(q.enqueue(kind, i=i))

        def fill(ids: list[int], kind: str) -> None:
            async def go() -> None:
                for batch in chunks(ids, 100):
                    await asyncio.gather(*(q.enqueue(kind, i=i) for i in batch))

            runner.run(go())

        def close() -> None:
            runner.run(q.disconnect())
            runner.close()

        return Pusher(single=single, fill=fill, close=close)

    def worker(self, cfg: dict) -> WorkerHandle:
        stop = threading.Event()

        async def go() -> None:
            q = Queue.from_url(cfg["url"], name=QUEUE)
            w = Worker(q, functions=[noop, sleep5, latency], concurrency=int(cfg["concurrency"]))
            task = asyncio.create_task(w.start())
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.05)
            await w.stop()

        return WorkerHandle(run=lambda: asyncio.run(go()), stop=stop.set)


if __name__ == "__main__":
    main(SaqAdapter())
