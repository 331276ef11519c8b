"""Many machines, simulated: workers in their own network namespaces (``ip netns``, each with
its own host name through ``unshare --uts``), reaching one server over veth pairs on private
addresses. One namespace's link is cut while its worker runs a job (a partition): the job
goes to the other worker once the lease runs out and succeeds there; the link comes back,
the partitioned worker finishes too late, and fencing refuses its report. The job succeeded
exactly once. Needs root and ``ip``; every name is unique per run and removed at teardown."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Processes, RedisServer, run_cli, wait_for
from fifoflow import Queue, keys
from fifoflow.keys import Key

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        sys.platform != "linux" or os.geteuid() != 0,
        reason="network namespaces need root on Linux",
    ),
    pytest.mark.skipif(
        shutil.which("ip") is None or shutil.which("unshare") is None,
        reason="needs iproute2's `ip` and util-linux's `unshare`",
    ),
]

LEASE = 3.0


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=20)


def _used_networks() -> set[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    return {
        ipaddress.ip_interface(f.split()[3]).network for f in out.splitlines() if len(f.split()) > 3
    }


class Machine:
    """A network namespace joined to the host by a veth pair on its own /30: the host side is
    ``.1`` (where the server listens), the namespace side ``.2``."""

    def __init__(self, run: str, label: str) -> None:
        self.ns = f"ffp-{run}-{label}"
        self.host_if, self.ns_if = f"ffp{run}{label}h", f"ffp{run}{label}n"
        self.hostname = f"ff-{label}-{run}"
        used = _used_networks()
        while True:
            second, third, fourth = random.randint(200, 249), random.randint(0, 255), 0
            fourth = 4 * random.randint(0, 63)
            net = ipaddress.ip_network(f"10.{second}.{third}.{fourth}/30")
            if not any(net.overlaps(u) for u in used):
                break
        self.server_ip, self.ns_ip = str(net[1]), str(net[2])
        self.made = False

    def make(self) -> None:
        self.made = True
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.server_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.ns)
        sh(*inside, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        sh(*inside, "ip", "link", "set", self.ns_if, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")

    def link(self, up: bool) -> None:
        sh("ip", "link", "set", self.host_if, "up" if up else "down")

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace under this machine's host name."""
        inner = f"hostname {shlex.quote(self.hostname)} && exec {shlex.join(argv)}"
        return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c", inner]

    def remove(self) -> None:
        if not self.made:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            sh("ip", "link", "del", self.host_if)  # takes its peer with it
        with contextlib.suppress(subprocess.SubprocessError):
            sh("ip", "netns", "del", self.ns)


@pytest.fixture
def machines() -> Iterator[tuple[Machine, Machine]]:
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"`ip netns` does not work here: {e}")
    run = uuid.uuid4().hex[:5]
    pair = (Machine(run, "a"), Machine(run, "b"))
    try:
        for m in pair:
            m.make()
        yield pair
    finally:
        for m in pair:
            m.remove()
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ffp-{run}-" not in leftovers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _starts(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def test_a_partitioned_worker_loses_its_job_and_its_late_report_is_refused(
    machines: tuple[Machine, Machine], procs: Processes, tmp_path: Path
) -> None:
    a, b = machines
    port = _free_port()
    srv = RedisServer(
        "--port", str(port), "--bind", a.server_ip, b.server_ip, "127.0.0.1",
        "--protected-mode", "no",
    )  # fmt: skip
    qname = "part-" + uuid.uuid4().hex[:8]
    q = Queue(qname, url=f"redis://127.0.0.1:{port}")
    log, markers = tmp_path / "starts.log", tmp_path / "markers"
    markers.mkdir()
    env = {
        "FIFOFLOW_QUEUE": qname,
        "FIFOFLOW_SOCKET_TIMEOUT": "1",
        "FIFOFLOW_CONNECT_TIMEOUT": "1",
        "FIFOFLOW_RETRY_BASE_SECONDS": "0.1",
    }
    worker = [sys.executable, "-m", "fifoflow", "worker", "fftest_targets", "-c", "1"]
    worker += ["--lease", str(LEASE), "--log-level", "INFO"]
    err_a = open(tmp_path / "a.log", "w")  # noqa: SIM115 (closed below)
    err_b = open(tmp_path / "b.log", "w")  # noqa: SIM115
    try:
        wa = procs.start(
            *a.command(*worker),
            env={**env, "FIFOFLOW_URL": f"redis://{a.server_ip}:{port}"},
            stdout=subprocess.DEVNULL,
            stderr=err_a,
        )
        job = q.push("fftest_targets:held_on_host", {"log": str(log), "markers": str(markers)})
        wait_for(lambda: _starts(log), timeout=30)
        assert [s["host"] for s in _starts(log)] == [a.hostname]  # a runs it

        wb = procs.start(
            *b.command(*worker),
            env={**env, "FIFOFLOW_URL": f"redis://{b.server_ip}:{port}"},
            stdout=subprocess.DEVNULL,
            stderr=err_b,
        )
        host_env = {"FIFOFLOW_URL": f"redis://127.0.0.1:{port}", "FIFOFLOW_QUEUE": qname}

        def hosts() -> set[str]:
            out = run_cli("workers", "--json", env=host_env)
            return {w["host"] for w in json.loads(out.stdout)} if out.returncode == 0 else set()

        assert wait_for(lambda: hosts() == {a.hostname, b.hostname}, timeout=30)
        table = run_cli("workers", env={**host_env, "COLUMNS": "250"}).stdout
        assert a.hostname in table and b.hostname in table  # host identity in `workers`

        # -- the partition: a's link goes down while its job runs ---------------------------
        a.link(up=False)
        wait_for(lambda: len(_starts(log)) == 2, timeout=LEASE * 6)
        assert [s["host"] for s in _starts(log)] == [a.hostname, b.hostname]  # redelivered
        (markers / b.hostname).touch()
        done = wait_for(lambda: (r := job.to_dict())["status"] == "succeeded" and r, timeout=20)
        assert done["result"] == b.hostname and done["lost"] == 1
        assert done["worker"].startswith(b.hostname + ".")

        # -- the link comes back; a's attempt ends late and is refused ----------------------
        a.link(up=True)
        (markers / a.hostname).touch()
        a_log = tmp_path / "a.log"
        refused = wait_for(
            lambda: re.search(
                rf"job {job.id} fftest_targets:held_on_host ended after \S+s, but its lease had "
                "passed to another worker",
                a_log.read_text(),
            ),
            timeout=30,
        )
        assert refused
        after = job.to_dict()
        assert (after["status"], after["result"], after["worker"]) == (
            "succeeded",
            b.hostname,
            done["worker"],
        )
        assert q.client.zcard(keys.queue_key(qname, Key.SUCCEEDED)) == 1
        succeeded = int(q.client.hget(keys.queue_key(qname, Key.STATS), "succeeded:default") or 0)
        assert succeeded == 1  # succeeded exactly once
        assert wa.poll() is None and wb.poll() is None  # both rode it out
    finally:
        err_a.close()
        err_b.close()
        q.close()
        procs.close()
        srv.close()
