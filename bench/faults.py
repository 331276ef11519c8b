"""Fault figures, measured (not asserted): how fast a killed worker's job comes back, and
how an idle worker behaves over a minute.

    .venv/bin/python bench/faults.py [--kills 10] [--idle 60]

* **death detection**: a busy worker (1 slot, a long job, more jobs behind it) is killed
  with SIGKILL while a second worker idles; the delay from the kill to the job's restart on
  the idle worker, and whether it restarted before the jobs behind it (due 1.5 s after the
  kill).
  Repeated ``--kills`` times; p50 and max. Leases are the default 10 s.
* **idle worker**: one worker idles for ``--idle`` seconds (its stderr is kept); then the
  WARNING lines it logged are counted, and 20 pushes measure push→start (the target writes
  its start time).

Runs on an embedded Valkey of its own in a temporary home; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fifoflow import Queue, server  # noqa: E402


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.005):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def start_worker(
    env: dict[str, str], *args: str, stderr: object = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fifoflow", "worker", "fftest_targets", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def starts(log: Path) -> list[dict[str, float]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def death_detection(url: str, env: dict[str, str], folder: Path, kills: int) -> None:
    delays: list[float] = []
    in_order = 0
    for k in range(kills):
        qname = f"death-{os.getpid()}-{k}"
        q = Queue(qname, url=url)
        log = folder / f"{qname}.log"
        wenv = {**env, "FIFOFLOW_QUEUE": qname}
        victim = start_worker(wenv, "-c", "1")
        job = q.push("fftest_targets:record", {"log": str(log), "n": 0, "seconds": 30})
        wait_for(lambda: len(starts(log)) == 1)  # noqa: B023
        idle = start_worker(wenv, "-c", "1")
        time.sleep(1.0)  # let the idle worker register and block
        behind = q.push_many(
            "fftest_targets:record", [{"log": str(log), "n": i} for i in range(1, 4)], delay=1.5
        )
        killed = time.time()
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        wait_for(lambda: len(starts(log)) >= 2, timeout=30)  # noqa: B023
        restart = starts(log)[1]
        delays.append(restart["t"] - killed)
        # The jobs behind were due 1.5 s after the kill: the next start is job 0 only if it
        # was back in line before them.
        in_order += restart["n"] == 0 and q.record(job.id)["lost"] == 1  # type: ignore[index]
        stop(idle)
        q.cancel(behind[0].id)
        q.close()
        print(f"  kill {k + 1}: restarted {delays[-1] * 1000:.0f} ms after the kill", flush=True)
    print(
        f"death detection over {kills} kills: p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms; restarted before every job behind it: "
        f"{in_order}/{kills}"
    )


def idle_worker(url: str, env: dict[str, str], folder: Path, seconds: float) -> None:
    qname = f"idle-{os.getpid()}"
    q = Queue(qname, url=url)
    err = folder / "idle-worker.stderr"
    with err.open("wb") as fh:
        worker = start_worker({**env, "FIFOFLOW_QUEUE": qname}, "-c", "1", stderr=fh)
        try:
            time.sleep(seconds)
            log = folder / "idle.log"
            latencies = []
            for i in range(20):
                t0 = time.time()
                q.push("fftest_targets:record", {"log": str(log), "n": i})
                wait_for(lambda: len(starts(log)) == i + 1)  # noqa: B023
                latencies.append(starts(log)[-1]["t"] - t0)
                time.sleep(0.2)
        finally:
            stop(worker)
    warnings = [line for line in err.read_text().splitlines() if " WARNING " in line]
    print(
        f"idle worker over {seconds:g} s: {len(warnings)} WARNING line(s); then push→start "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
        f"(20 pushes)"
    )
    for line in warnings[:5]:
        print("  ", line)
    q.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--idle", type=float, default=60.0)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ff-faults-"))
    home = folder / "home"
    url = server.ensure_running(home)
    env = {
        **os.environ,
        "FIFOFLOW_URL": url,
        "FIFOFLOW_HOME": str(home),
        "PYTHONPATH": str(ROOT / "tests"),
    }
    try:
        if args.idle:  # first: the kills leave dead workers for a live one to bury
            idle_worker(url, env, folder, args.idle)
        if args.kills:
            death_detection(url, env, folder, args.kills)
    finally:
        server.stop(home)


if __name__ == "__main__":
    main()
