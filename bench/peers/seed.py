"""The seed pattern: the popular tutorial dispatcher, reimplemented as a baseline.

Producers LPUSH JSON jobs onto a list; one dispatcher loop BRPOPs a job, submits it to a
ThreadPoolExecutor, and sleeps 0.1 s whenever no slot is free. No leases, no acks, no
retries, no results: a job popped by a dispatcher that dies is lost. This is what a queue
written in an afternoon looks like, and the floor any real queue is compared with.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

POLL_SLEEP = 0.1  # the tutorial's "no free slot" back-off


class SeedQueue:
    def __init__(self, name: str, url: str) -> None:
        self.key = f"seed:{name}"
        self.redis = redis.Redis.from_url(url)

    def push(self, target: str, params: dict[str, Any] | None = None) -> None:
        self.redis.lpush(self.key, json.dumps({"target": target, "params": params or {}}))

    def push_many(self, target: str, params_list: Iterable[dict[str, Any]]) -> None:
        jobs = [json.dumps({"target": target, "params": p}) for p in params_list]
        for start in range(0, len(jobs), 10_000):
            self.redis.lpush(self.key, *jobs[start : start + 10_000])


class SeedWorker:
    def __init__(self, name: str, url: str, concurrency: int = 4) -> None:
        self.queue = SeedQueue(name, url)
        self.concurrency = concurrency
        self.busy = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.functions: dict[str, Callable[..., Any]] = {}

    def _resolve(self, target: str) -> Callable[..., Any]:
        if target not in self.functions:
            module, attr = target.split(":")
            self.functions[target] = getattr(importlib.import_module(module), attr)
        return self.functions[target]

    def _run(self, fn: Callable[..., Any], params: dict[str, Any]) -> None:
        try:
            fn(**params)
        finally:
            with self.lock:
                self.busy -= 1

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            while not self.stopping.is_set():
                if self.busy >= self.concurrency:
                    time.sleep(POLL_SLEEP)
                    continue
                item = self.queue.redis.brpop([self.queue.key], timeout=1)
                if item is None:
                    continue
                job = json.loads(item[1])
                with self.lock:
                    self.busy += 1
                pool.submit(self._run, self._resolve(job["target"]), job["params"])

    def stop(self) -> None:
        self.stopping.set()
