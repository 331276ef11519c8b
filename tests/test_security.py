"""Security: passwords and TLS against Debian's redis-server, hostile targets, no code
execution from job data, and an embedded server that only listens on a private socket.

The redis-server here listens on a plain loopback port and a TLS port at once (a throwaway
CA and server certificate made with ``openssl`` in the test), and requires a password.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from conftest import EmbeddedServer, Processes, RedisServer, wait_for
from fifoflow import Queue

PASSWORD = "pw-Zq8s3cret"
SRC = Path(__file__).resolve().parent.parent / "src" / "fifoflow"
CLI = Callable[..., subprocess.CompletedProcess[str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(folder: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", "2"]
    openssl("req", "-x509", *ec, *days, "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=fifoflow test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", *days, "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-extfile", "san.cnf")  # fmt: skip
    return {n: folder / f"{n}.crt" for n in ("ca", "server")} | {"key": folder / "server.key"}


@dataclass
class SecureRedis:
    port: int
    tls_port: int
    ca: Path

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}"

    def tls_url(self, query: str = "") -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.tls_port}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """Debian's redis-server: a plain port and a TLS port, both behind a password."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        pytest.skip("needs Debian's redis-server and openssl")
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    port, tls_port = free_port(), free_port()
    srv = RedisServer(
        "--port", str(port),
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs["server"]),
        "--tls-key-file", str(certs["key"]),
        "--tls-ca-cert-file", str(certs["ca"]),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    try:
        redis.Redis(unix_socket_path=str(srv.socket)).config_set("requirepass", PASSWORD)
        yield SecureRedis(port, tls_port, certs["ca"])
    finally:
        srv.proc.terminate()  # reaped here, so close() does not wait on a zombie
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.proc.wait(5)
        srv.close()


def one_error_line(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """A server that refuses us (or cannot be reached): the operation failed, exit 1."""
    shown = f"rc={r.returncode} stdout={r.stdout!r} stderr={r.stderr!r}"
    assert r.returncode == code, shown
    assert "Traceback" not in r.stdout + r.stderr, shown
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert PASSWORD not in r.stdout + r.stderr, "the password was shown"
    return lines[0]


def push_and_work(cli: CLI, url: str, qname: str) -> dict[str, object]:
    """push with the CLI, run a burst worker, return the finished job: all through ``url``."""
    env = {"FIFOFLOW_URL": url, "FIFOFLOW_QUEUE": qname}
    r = cli("push", "fftest_targets:add", "--params", '{"x": 20, "y": 22}', env=env)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    w = cli("worker", "fftest_targets", "--burst", env=env, timeout=60)
    assert w.returncode == 0, w.stderr
    assert PASSWORD not in w.stdout + w.stderr, "the worker logged the password"
    shown = cli("job", job_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    st = cli("status", "--json", env=env)
    assert PASSWORD not in shown.stdout + st.stdout
    assert json.loads(st.stdout)["queues"][qname]["succeeded"] == 1
    return dict(json.loads(shown.stdout))


# -- passwords and TLS --------------------------------------------------------------------


def test_password_url_end_to_end(secure_redis: SecureRedis, cli: CLI, qname: str) -> None:
    job = push_and_work(cli, secure_redis.url, qname)
    assert (job["status"], job["result"], job["attempts"]) == ("succeeded", 42, 1)


@pytest.mark.parametrize("query", ["ssl_ca_certs={ca}", "ssl_cert_reqs=none"])
def test_tls_url_end_to_end(secure_redis: SecureRedis, cli: CLI, qname: str, query: str) -> None:
    url = secure_redis.tls_url(query.format(ca=secure_redis.ca))
    job = push_and_work(cli, url, qname)
    assert (job["status"], job["result"], job["attempts"]) == ("succeeded", 42, 1)
    # and the Python API over the same TLS connection
    q = Queue(qname, url=url)
    try:
        assert q.client.connection_pool.connection_class.__name__ == "SSLConnection"
        assert q.stats()["succeeded"] == 1
    finally:
        q.close()


REFUSED = "refused the credentials"
BAD_URLS: dict[str, tuple[Callable[[SecureRedis], str], str]] = {
    "wrong-password": (lambda s: s.url.replace(PASSWORD, "wrong"), REFUSED),
    "no-password": (lambda s: s.url.replace(f":{PASSWORD}@", ""), "Authentication required"),
    "wrong-user": (lambda s: s.url.replace("//:", "//nobody:"), REFUSED),
    "tls-wrong-pw": (lambda s: s.tls_url("ssl_cert_reqs=none").replace(PASSWORD, "x"), REFUSED),
    "tls-unknown-ca": (lambda s: s.tls_url(), "certificate verify failed"),
    "plain-to-tls-port": (lambda s: s.url.replace(str(s.port), str(s.tls_port)), "cannot reach"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_bad_credentials_one_clear_line(
    secure_redis: SecureRedis, cli: CLI, qname: str, case: str
) -> None:
    make_url, expected = BAD_URLS[case]
    env = {"FIFOFLOW_URL": make_url(secure_redis), "FIFOFLOW_QUEUE": qname}
    for args in (["status"], ["push", "fftest_targets:add"], ["worker", "fftest_targets"]):
        line = one_error_line(cli(*args, env=env, timeout=30))
        assert expected in line, line
    ok = Queue(qname, url=secure_redis.url)
    try:
        assert ok.job_ids() == []  # nothing got through
    finally:
        ok.close()


# -- hostile targets ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_hostile_targets_never_imported_or_run(
    vqueue: Queue, procs: Processes, tmp_path: Path, mode: str
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # Modules that leave a mark when imported; one shares the allowed module's prefix.
    evil = tmp_path / "evil"
    evil.mkdir()
    for name in ("fftest_evil", "fftest_targets_evil"):
        (evil / f"{name}.py").write_text(
            f"open({str(marks / name)!r}, 'w').write('imported')\n"
            "def run(**kw):\n"
            f"    open({str(marks / (name + '-ran'))!r}, 'w').write('ran')\n"
        )
    hostile = {
        "os:system": {"command": f"touch {marks / 'os-system'}"},
        "subprocess:call": {"args": ["touch", str(marks / "subprocess-call")]},
        "subprocess:run": {"args": ["touch", str(marks / "subprocess-run")]},
        "builtins:eval": {"source": f"open({str(marks / 'eval')!r}, 'w')"},
        "builtins:exec": {"source": f"open({str(marks / 'exec')!r}, 'w')"},
        "importlib:import_module": {"name": "fftest_evil"},
        "fftest_evil:run": {},
        "fftest_targets_evil:run": {},
        "shutil:rmtree": {"path": str(marks)},
    }
    jobs = {t: vqueue.push(t, p, retries=3) for t, p in hostile.items()}
    good = vqueue.push("fftest_targets:add", {"x": 1, "y": 2})
    env = {"PYTHONPATH": os.pathsep.join([str(evil), os.environ["PYTHONPATH"]])}
    extra = ["--processes"] if mode == "processes" else []
    worker = procs.worker("fftest_targets", "--concurrency", "2", *extra, env=env)
    assert good.result(timeout=30) == 3
    wait_for(lambda: all(j.status == "dead" for j in jobs.values()), timeout=30)
    for target, job in jobs.items():
        record = job.to_dict()
        assert record["attempts"] == 1, (target, record)  # dead at once: never retried
        assert "outside the modules" in record["error"], record["error"]
        assert "not imported" in record["error"]
    assert sorted(p.name for p in marks.iterdir()) == []
    assert worker.poll() is None, "the worker crashed"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def code_names(path: Path) -> set[str]:
    """Every name used in the code of a Python file: comments and strings left out."""
    names: set[str] = set()
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.NAME:
            names.add(tok.string)
    return names


def test_no_pickle_eval_or_exec_in_the_package() -> None:
    """Job data is JSON only: no deserializer that runs code, no eval/exec anywhere."""
    files = sorted(SRC.rglob("*.py"))
    assert len(files) >= 8
    forbidden = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "eval", "exec"}
    found = {str(f.relative_to(SRC)): sorted(code_names(f) & forbidden) for f in files}
    assert {f: n for f, n in found.items() if n} == {}
    # and no textual hit in code lines either (eval(/exec( as calls, pickle in imports)
    for f in files:
        for lineno, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert "eval(" not in code.replace("literal_eval(", ""), f"{f}:{lineno}"
            assert "exec(" not in code, f"{f}:{lineno}"
            assert not code.lstrip().startswith(("import pickle", "from pickle")), f"{f}:{lineno}"
    # the Lua scripts build no code at run time either
    for lua in sorted((SRC / "scripts").glob("*.lua")):
        text = lua.read_text()
        assert "loadstring" not in text and "load(" not in text, lua


# -- the embedded server -----------------------------------------------------------------


def test_embedded_server_listens_only_on_a_private_socket(valkey: EmbeddedServer) -> None:
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    try:
        cfg = client.config_get("*")
    finally:
        client.close()
    assert cfg["port"] == "0"
    assert cfg.get("tls-port", "0") == "0"
    assert cfg["unixsocketperm"] == "700"
    assert cfg["protected-mode"] == "yes"
    sock = Path(cfg["unixsocket"])
    assert valkey.url == f"unix://{sock}"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(cfg["dir"]).stat().st_mode) == 0o700  # the data: jobs, results


def test_server_started_by_the_cli_is_private(cli: CLI, isolated_env: Path) -> None:
    """The production path: FIFOFLOW_URL unset, ``fifoflow server start`` in a fresh home."""
    r = cli("server", "start")
    assert r.returncode == 0, r.stderr
    try:
        info = json.loads(cli("server", "status", "--json").stdout)
        sock = Path(info["url"].removeprefix("unix://"))
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        for folder in (isolated_env, isolated_env / "data"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        client = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        try:
            assert client.config_get("port")["port"] == "0"
        finally:
            client.close()
        # nothing of ours on any TCP port: the listening sockets of the server's pid
        pid = int(info["pid"])
        assert not listening_tcp_ports(pid)
    finally:
        assert cli("server", "stop").returncode == 0


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state owned by ``pid`` (from /proc; empty if unreadable)."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for row in list(fh)[1:]:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_python_api_refuses_non_json_params_before_sending(vqueue: Queue) -> None:
    """Nothing but JSON ever reaches the server: objects that would need pickle are refused."""

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, ("touch /tmp/never",))

    with pytest.raises(TypeError, match="not JSON"):
        vqueue.push("fftest_targets:echo", {"x": Payload()})
    assert vqueue.job_ids() == []


@pytest.mark.parametrize("processes", [False, True])
def test_only_public_functions_defined_in_the_modules_run(
    vqueue: Queue, procs: Processes, processes: bool
) -> None:
    imported = vqueue.push("fftest_targets:getcwd", retries=2)
    private = vqueue.push("fftest_targets:_private", retries=2)
    fine = vqueue.push("fftest_targets:add", {"x": 1})
    w = procs.worker("fftest_targets", "--burst", *(["--processes"] if processes else []))
    assert w.wait(60) == 0
    assert fine.result(timeout=1) == 1
    rec = vqueue.record(imported.id)
    assert rec is not None and (rec["status"], rec["attempts"]) == ("dead", 1)
    assert "is defined in posix" in rec["error"]
    rec = vqueue.record(private.id)
    assert rec is not None and (rec["status"], rec["attempts"]) == ("dead", 1)
    assert "is private" in rec["error"]
