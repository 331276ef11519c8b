"""A producer process for the failover tests: pushes ``fftest_targets:record`` jobs one
at a time, round robin over the queues, and prints one JSON line per *acknowledged* push
(its id, queue, n and time) or per refused one (the error), flushed at once.

    python fftest_producer.py URL RUNLOG COUNT OFFSET QUEUE...
"""

from __future__ import annotations

import json
import sys
import time

import redis

from fifoflow import FifoflowError, Queue


def main() -> None:
    url, runlog, count, offset, *names = sys.argv[1:]
    queues = [Queue(n, url=url) for n in names]
    for i in range(int(count)):
        n = int(offset) + i
        q = queues[i % len(queues)]
        try:
            job = q.push("fftest_targets:record", {"log": runlog, "n": n, "seconds": 0.01})
        except (
            FifoflowError,
            redis.RedisError,
            OSError,
        ) as e:  # not acknowledged: it may or may not exist
            line = {"n": n, "queue": q.name, "error": f"{type(e).__name__}: {e}"}
        else:
            line = {"n": n, "queue": q.name, "id": job.id, "t": time.time()}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
