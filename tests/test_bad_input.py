# ruff: noqa: E501 - the case tables keep one case a line
"""Bad input, table-driven, through the command line and the Python API.

Every CLI case checks the contract's failure shape: the exit code (2 for bad usage or input,
1 for an operation that failed), exactly one non-empty line on stderr, no traceback anywhere,
nothing on stdout, and the queued state unchanged (counts, job ids, known queues). Every API
case checks the documented exception and the same unchanged state. A hypothesis test fuzzes
``push``/``push_many``: a call either succeeds and the params round-trip exactly, or raises
TypeError/ValueError and nothing was queued.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fifoflow
from conftest import RedisServer
from fifoflow import ConnectionFailed, JobNotFound, Queue, QueueFull, UsageError, Worker
from fifoflow.validation import TARGET_RE
from qops import claim, complete

T = "fftest_targets:add"
MiB = 1024 * 1024
CLI = Callable[..., subprocess.CompletedProcess[str]]


def snapshot(q: Queue) -> tuple[dict[str, int], list[str], list[str]]:
    return q.stats(), q.job_ids(), q.broker.queues()


def assert_one_line_error(
    r: subprocess.CompletedProcess[str], code: int, match: str | None = None
) -> str:
    """The contract's failure shape; returns the error line."""
    everything = f"rc={r.returncode}\nstdout={r.stdout!r}\nstderr={r.stderr!r}"
    assert r.returncode == code, everything
    assert "Traceback" not in r.stdout + r.stderr, everything
    lines = r.stderr.splitlines()
    assert len(lines) == 1, everything
    assert lines[0].strip(), everything
    assert r.stdout == "", everything
    if match is not None:
        assert match in lines[0], everything
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def auth_url() -> Iterator[str]:
    """Debian's redis-server on a loopback port, requiring the password ``s3cret``."""
    port = free_port()
    try:
        srv = RedisServer("--port", str(port))
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"redis-server unavailable: {e}")
    try:
        redis.Redis(unix_socket_path=str(srv.socket)).config_set("requirepass", "s3cret")
        yield f"redis://127.0.0.1:{port}"
    finally:
        srv.close()


# -- the command line -------------------------------------------------------------------

DEEP = '{"x":' + "[" * 100_000 + "]" * 100_000 + "}"
LINE = '{"x": 1}\n'

#: (args, exit code, text the error line must contain, files to create {name: content},
#:  stdin, extra environment). ``{tmp}`` in args is the test's temporary folder.
CLI_CASES = [
    # --params: malformed and non-object JSON
    pytest.param(["push", T, "--params", '{"x":'], 2, "--params: invalid JSON", id="params-truncated"),
    pytest.param(["push", T, "--params", ""], 2, "invalid JSON", id="params-empty"),
    pytest.param(["push", T, "--params", "[1, 2]"], 2, "expected a JSON object", id="params-list"),
    pytest.param(["push", T, "--params", '"x"'], 2, "expected a JSON object", id="params-string"),
    pytest.param(["push", T, "--params", "null"], 2, "expected a JSON object", id="params-null"),
    pytest.param(["push", T, "--params", '{"x": NaN}'], 2, "not JSON", id="params-nan"),
    pytest.param(["push", T, "--params", '{"x": 1e999}'], 2, "not JSON", id="params-overflow"),
    pytest.param(["push", T, "--params", '{"x": "\\ud800"}'], 2, "--params", id="params-lone-surrogate"),
    pytest.param(["push", T, "--params", '{"x": 1} {"y": 2}'], 2, "invalid JSON", id="params-two-docs"),
    pytest.param(["push", T, "--params-file", "{tmp}/deep.jsonl"], 2, "line 1", {"deep.jsonl": DEEP}, id="params-too-deep"),
    pytest.param(["push", T, "--params", "{}", "--params-file", "{tmp}/ok.jsonl"], 2, "not both", {"ok.jsonl": LINE}, id="params-and-file"),
    # --params over the size limit (settings.max_params_bytes)
    pytest.param(["push", T, "--params-file", "{tmp}/big.jsonl"], 2, "the limit is 1048576", {"big.jsonl": json.dumps({"x": "a" * MiB})}, id="params-over-1MiB-file"),
    pytest.param(["push", T, "--params-file", "-"], 2, "the limit is 1048576", None, json.dumps({"x": "é" * (MiB // 2)}), id="params-over-1MiB-stdin"),
    pytest.param(["push", T, "--params", json.dumps({"x": "a" * 100})], 2, "the limit is 64", None, None, {"FIFOFLOW_MAX_PARAMS_BYTES": "64"}, id="params-over-limit-setting"),
    # --params-file: the error names the line; earlier good lines are not queued
    pytest.param(["push", T, "--params-file", "{tmp}/p.jsonl"], 2, "p.jsonl line 3: invalid JSON", {"p.jsonl": LINE * 2 + '{"x":\n' + LINE}, id="file-bad-json-line-3"),
    pytest.param(["push", T, "--params-file", "{tmp}/p.jsonl"], 2, "p.jsonl line 2: expected a JSON object", {"p.jsonl": LINE + "[1]\n" + LINE}, id="file-list-line-2"),
    pytest.param(["push", T, "--params-file", "{tmp}/p.jsonl"], 2, "p.jsonl line 4: expected a JSON object", {"p.jsonl": LINE + "\n\n" + "null\n"}, id="file-null-after-blank-lines"),
    pytest.param(["push", T, "--params-file", "{tmp}/p.jsonl"], 2, "line 5: params are 1048584 bytes", {"p.jsonl": LINE * 4 + json.dumps({"x": "a" * MiB}) + "\n"}, id="file-line-5-over-limit"),
    pytest.param(["push", T, "--params-file", "-"], 2, "- line 2: invalid JSON", None, LINE + "{'x': 1}\n", id="stdin-bad-line-2"),
    pytest.param(["push", T, "--params-file", "-"], 2, "no parameter sets", None, "", id="stdin-empty"),
    pytest.param(["push", T, "--params-file", "{tmp}/e.jsonl"], 2, "no parameter sets", {"e.jsonl": "\n  \n"}, id="file-blank"),
    pytest.param(["push", T, "--params-file", "{tmp}/missing.jsonl"], 2, "cannot read params file", id="file-missing"),
    pytest.param(["push", T, "--params-file", "{tmp}"], 2, "cannot read params file", id="file-is-a-folder"),
    pytest.param(["push", T, "--params-file", "{tmp}/bin.jsonl"], 2, "cannot read params file", {"bin.jsonl": b"\xff\xfe\x00{"}, id="file-not-utf8"),
    # invalid targets
    pytest.param(["push", "os.system"], 2, "invalid target", id="target-no-colon"),
    pytest.param(["push", ""], 2, "invalid target", id="target-empty"),
    pytest.param(["push", "fftest_targets:"], 2, "invalid target", id="target-no-function"),
    pytest.param(["push", ":add"], 2, "invalid target", id="target-no-module"),
    pytest.param(["push", "fftest_targets:add:x"], 2, "invalid target", id="target-two-colons"),
    pytest.param(["push", "fftest_targets:add()"], 2, "invalid target", id="target-call"),
    pytest.param(["push", "fftest_targets:os.system"], 2, "invalid target", id="target-attribute-chain"),
    pytest.param(["push", "../../etc/passwd:x"], 2, "invalid target", id="target-path"),
    pytest.param(["push", "fftest_targets:añadir"], 2, "invalid target", id="target-unicode"),
    pytest.param(["push", "fftest_targets:add\nx"], 2, "invalid target", id="target-newline"),
    pytest.param(["push"], 2, "Missing argument", id="target-missing"),
    # numbers
    pytest.param(["push", T, "--delay", "-1"], 2, "delay", id="delay-negative"),
    pytest.param(["push", T, "--delay", "abc"], 2, "--delay", id="delay-not-a-number"),
    pytest.param(["push", T, "--delay", "nan"], 2, "delay", id="delay-nan"),
    pytest.param(["push", T, "--timeout", "-1"], 2, "timeout", id="timeout-negative"),
    pytest.param(["push", T, "--timeout", "0"], 2, "timeout", id="timeout-zero"),
    pytest.param(["push", T, "--timeout", "abc"], 2, "--timeout", id="timeout-not-a-number"),
    pytest.param(["push", T, "--retries", "-1"], 2, "retries", id="retries-negative"),
    pytest.param(["push", T, "--retries", "abc"], 2, "--retries", id="retries-not-a-number"),
    pytest.param(["push", T, "--priority", "abc"], 2, "--priority", id="priority-not-a-number"),
    pytest.param(["worker", "fftest_targets", "--concurrency", "0"], 2, "concurrency", id="concurrency-zero"),
    pytest.param(["worker", "fftest_targets", "--concurrency", "abc"], 2, "--concurrency", id="concurrency-not-a-number"),
    pytest.param(["worker", "fftest_targets", "--lease", "-1", "--burst"], 2, "lease", id="lease-negative"),
    pytest.param(["worker", "fftest_targets", "--lease", "nan", "--burst"], 2, "lease", id="lease-nan"),
    pytest.param(["worker", "fftest_targets", "--grace", "-1"], 2, "grace", id="grace-negative"),
    pytest.param(["worker", "fftest_targets", "--grace", "nan", "--burst"], 2, "grace", id="grace-nan"),
    pytest.param(["jobs", "--limit", "-1"], 2, "--limit", id="jobs-limit-negative"),
    pytest.param(["wait", "--timeout", "-1"], 2, "timeout", id="wait-timeout-negative"),
    pytest.param(["wait", "--timeout", "nan"], 2, "timeout", id="wait-timeout-nan"),
    # names: queues, pools, keys, modules (unicode included)
    pytest.param(["push", T, "--queue", "q✓"], 2, "invalid queue name", id="queue-unicode"),
    pytest.param(["push", T, "--queue", "a{b}"], 2, "invalid queue name", id="queue-braces"),
    pytest.param(["push", T, "--pool", "pööl"], 2, "invalid pool name", id="pool-unicode"),
    pytest.param(["push", T, "--key", ""], 2, "key", id="key-empty"),
    pytest.param(["status", "--queue", "a b"], 2, "invalid queue name", id="status-bad-queue"),
    pytest.param(["jobs", "--status", "bogus"], 2, "unknown status", id="jobs-bad-status"),
    pytest.param(["worker", "a b"], 2, "invalid module name", id="worker-bad-module"),
    pytest.param(["worker"], 2, "Missing argument", id="worker-no-module"),
    pytest.param(["worker", "fftest_targets", "--log-level", "bogus"], 2, "log level", id="worker-bad-log-level"),
    # usage
    pytest.param(["nosuchcommand"], 2, "No such command", id="unknown-command"),
    pytest.param(["dlq", "requeue"], 2, "give job ids or --all", id="dlq-requeue-nothing"),
    # unknown ids
    pytest.param(["job", "nope"], 2, "no job with id 'nope'", id="job-unknown"),
    pytest.param(["job", "x\ny"], 2, "no job with id 'x\\ny'", id="job-id-newline"),
    pytest.param(["cancel", "nope"], 2, "no job with id 'nope'", id="cancel-unknown"),
    pytest.param(["dlq", "requeue", "nope"], 2, "no job with id 'nope'", id="dlq-requeue-unknown"),
    pytest.param(["dlq", "requeue", "*"], 2, "no job with id '*'", id="dlq-requeue-star"),
    # unreachable server URLs: the operation failed (exit 1, try again later); malformed: 2
    pytest.param(["status"], 1, "cannot reach the server at redis://127.0.0.1:1", None, None, {"FIFOFLOW_URL": "redis://127.0.0.1:1"}, id="url-unreachable"),
    pytest.param(["push", T], 1, "cannot reach the server", None, None, {"FIFOFLOW_URL": "redis://127.0.0.1:1"}, id="url-unreachable-push"),
    pytest.param(["status"], 1, "cannot reach the server", None, None, {"FIFOFLOW_URL": "unix:///nonexistent/fifoflow.sock"}, id="url-missing-socket"),
    pytest.param(["status"], 1, "cannot reach the server at redis://:***@127.0.0.1:1", None, None, {"FIFOFLOW_URL": "redis://:hunter2@127.0.0.1:1"}, id="url-unreachable-password-hidden"),
    pytest.param(["status"], 1, "cannot reach the server at redis://127.0.0.1:1", None, None, {"FIFOFLOW_URL": "", "REDIS_URL": "redis://127.0.0.1:1"}, id="redis-url-when-fifoflow-url-unset"),
    pytest.param(["status"], 2, "invalid server URL 'http://x'", None, None, {"FIFOFLOW_URL": "http://x"}, id="url-http"),
    pytest.param(["status"], 2, "error: invalid server URL 'redis+cluster://:***@host': each node must be HOST:PORT", None, None, {"FIFOFLOW_URL": "redis+cluster://:pw@host"}, id="url-cluster-bad-node"),
    pytest.param(["status"], 2, "invalid server URL", None, None, {"FIFOFLOW_URL": "redis://:notaport"}, id="url-bad-port"),
    pytest.param(["status"], 2, "invalid server URL", None, None, {"FIFOFLOW_URL": "redis://[::1"}, id="url-broken-ipv6"),
    pytest.param(["status"], 2, "invalid server URL", None, None, {"FIFOFLOW_URL": "localhost:6379"}, id="url-no-scheme"),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(CLI_CASES)), ids=[c.id for c in CLI_CASES])
def test_cli_rejects_bad_input(case: int, vqueue: Queue, cli: CLI, tmp_path: Path) -> None:
    args, code, match, files, stdin, env = (list(CLI_CASES[case].values) + [None] * 6)[:6]
    for name, content in (files or {}).items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    vqueue.push(T, {"x": -1})  # something already queued that must stay as it is
    before = snapshot(vqueue)
    r = cli(*(a.replace("{tmp}", str(tmp_path)) for a in args), input=stdin, env=env, timeout=30)
    assert_one_line_error(r, code, match)
    assert snapshot(vqueue) == before


def test_cli_full_queue_exit_1(vqueue: Queue, cli: CLI, tmp_path: Path) -> None:
    vqueue.set_max_length(3)
    vqueue.push_many(T, [{"x": i} for i in range(2)])
    before = snapshot(vqueue)
    # two more would pass max_length: the whole batch is refused
    (tmp_path / "two.jsonl").write_text(LINE * 2)
    r = cli("push", T, "--params-file", str(tmp_path / "two.jsonl"))
    assert_one_line_error(r, 1, "is full")
    assert snapshot(vqueue) == before
    # one more fits, the next does not
    assert cli("push", T, "--params", "{}").returncode == 0
    before = snapshot(vqueue)
    assert_one_line_error(
        cli("push", T, "--params", "{}"), 1, "is full: 3 waiting + 1 new > max_length 3"
    )
    assert snapshot(vqueue) == before
    vqueue.set_max_length(None)
    assert cli("push", T).returncode == 0


def test_cli_operations_that_fail_exit_1(vqueue: Queue, cli: CLI) -> None:
    job = vqueue.push(T, {"x": 1})
    _, claimed = claim(vqueue, "w", 1, ["default"], 30)
    complete(vqueue, claimed[0], "ok", "1")
    before = snapshot(vqueue)
    assert_one_line_error(cli("cancel", job.id), 1, "is succeeded")
    assert_one_line_error(cli("dlq", "requeue", job.id), 2, "not dead")
    assert snapshot(vqueue) == before
    pending = vqueue.push(T, {"x": 2}, delay=60)
    before = snapshot(vqueue)
    assert_one_line_error(cli("wait", "--timeout", "0.3", "-q", vqueue.name), 1, "timed out")
    assert snapshot(vqueue) == before
    assert pending.status == "delayed"


def test_cli_wrong_password(vqueue: Queue, cli: CLI, auth_url: str) -> None:
    """A server that refuses the credentials: the operation failed (exit 1), one line."""
    before = snapshot(vqueue)
    wrong = auth_url.replace("redis://", "redis://:wrong@")
    for args in (["status"], ["push", T, "--params", "{}"], ["worker", "fftest_targets"]):
        line = assert_one_line_error(cli(*args, env={"FIFOFLOW_URL": wrong}), 1, "credentials")
        assert "wrong" not in line and ":***@" in line  # the password is never echoed
    line = assert_one_line_error(cli("status", env={"FIFOFLOW_URL": auth_url}), 1)
    assert "Authentication required" in line
    assert snapshot(vqueue) == before


UNICODE = {
    "name": "héllo wörld ✓ 🚀",
    "ключ": "значение",
    "中文": ["汉字", {"ζ": "ω"}],
    "rtl": "\u202eabc",
    "nul": "a\x00b",
    "emoji_key_🔑": 1,
}


def test_cli_unicode_params_round_trip(vqueue: Queue, cli: CLI, tmp_path: Path) -> None:
    r = cli("push", "fftest_targets:echo", "--params", json.dumps(UNICODE, ensure_ascii=False))
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    # as a JSON Lines file too, ASCII-escaped this time
    (tmp_path / "u.jsonl").write_text(json.dumps(UNICODE) + "\n", encoding="utf-8")
    r2 = cli("push", "fftest_targets:echo", "--params-file", str(tmp_path / "u.jsonl"),
             "--key", "ключ-🔑")  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    shown = json.loads(cli("job", job_id, "--json").stdout)
    assert shown["params"] == UNICODE
    r3 = cli("worker", "fftest_targets", "--burst")
    assert r3.returncode == 0, r3.stderr
    assert vqueue.job(job_id).result() == UNICODE
    other = vqueue.job(r2.stdout.strip())
    assert other.result() == UNICODE
    assert other.key == "ключ-🔑"


# -- the Python API -----------------------------------------------------------------------

nested: Any = []
for _ in range(50_000):
    nested = [nested]
circular: dict[str, Any] = {}
circular["self"] = [circular]

#: (call on the queue, exception type, text the message must contain)
API_CASES = [
    pytest.param(lambda q: q.push(T, [1, 2]), TypeError, "JSON object", id="params-list"),
    pytest.param(lambda q: q.push(T, "x=1"), TypeError, "JSON object", id="params-string"),
    pytest.param(lambda q: q.push(T, []), TypeError, "JSON object", id="params-empty-list"),
    pytest.param(lambda q: q.push(T, ""), TypeError, "JSON object", id="params-empty-string"),
    pytest.param(lambda q: q.push(T, 0), TypeError, "JSON object", id="params-zero"),
    pytest.param(lambda q: q.push(T, {1: 2}), TypeError, "keys", id="params-int-key"),
    pytest.param(lambda q: q.push(T, {"a": {1: 2}}), TypeError, "keys", id="params-nested-int-key"),
    pytest.param(lambda q: q.push(T, {"a": [{None: 2}]}), TypeError, "keys", id="params-nested-none-key"),
    pytest.param(lambda q: q.push(T, {"x": {1, 2}}), TypeError, "not JSON", id="params-set"),
    pytest.param(lambda q: q.push(T, {"x": b"raw"}), TypeError, "not JSON", id="params-bytes"),
    pytest.param(lambda q: q.push(T, {"x": object()}), TypeError, "not JSON", id="params-object"),
    pytest.param(lambda q: q.push(T, {"x": math.nan}), ValueError, "not JSON", id="params-nan"),
    pytest.param(lambda q: q.push(T, {"x": -math.inf}), ValueError, "not JSON", id="params-inf"),
    pytest.param(lambda q: q.push(T, {"x": "\ud800"}), ValueError, None, id="params-lone-surrogate"),
    pytest.param(lambda q: q.push(T, {"x": nested}), ValueError, "nested too deeply", id="params-too-deep"),
    pytest.param(lambda q: q.push(T, {"x": circular}), ValueError, "circular", id="params-circular"),
    pytest.param(lambda q: q.push(T, {"x": "a" * MiB}), UsageError, "the limit is 1048576", id="params-over-1MiB"),
    pytest.param(lambda q: q.push_many(T, [{}, {}, [1]]), TypeError, "JSON object", id="push-many-one-bad"),
    pytest.param(lambda q: q.push_many(T, [{}, {"x": "a" * MiB}]), UsageError, "limit", id="push-many-one-too-big"),
    pytest.param(lambda q: q.push_many(T, None), TypeError, None, id="push-many-none"),
    pytest.param(lambda q: q.push_many(T, {"x": 1}), TypeError, "JSON object", id="push-many-dict"),
    pytest.param(lambda q: q.push_many(T, [{}, {}], keys_=["a"]), UsageError, "keys_", id="push-many-keys-mismatch"),
    pytest.param(lambda q: q.push("os.system", {}), UsageError, "invalid target", id="target-no-colon"),
    pytest.param(lambda q: q.push(None, {}), UsageError, "invalid target", id="target-none"),
    pytest.param(lambda q: q.push(b"fftest_targets:add", {}), UsageError, "invalid target", id="target-bytes"),
    pytest.param(lambda q: q.push("fftest_targets:añadir", {}), UsageError, "invalid target", id="target-unicode"),
    pytest.param(lambda q: q.push(T, {}, priority="1"), TypeError, "priority", id="priority-string"),
    pytest.param(lambda q: q.push(T, {}, priority=1.5), TypeError, "priority", id="priority-float"),
    pytest.param(lambda q: q.push(T, {}, priority=True), TypeError, "priority", id="priority-bool"),
    pytest.param(lambda q: q.push(T, {}, retries=-1), ValueError, "retries", id="retries-negative"),
    pytest.param(lambda q: q.push(T, {}, retries="3"), TypeError, "retries", id="retries-string"),
    pytest.param(lambda q: q.push(T, {}, delay=-1), ValueError, "delay", id="delay-negative"),
    pytest.param(lambda q: q.push(T, {}, delay="5"), TypeError, "delay", id="delay-string"),
    pytest.param(lambda q: q.push(T, {}, delay=math.nan), ValueError, "delay", id="delay-nan"),
    pytest.param(lambda q: q.push(T, {}, timeout=0), ValueError, "timeout", id="timeout-zero"),
    pytest.param(lambda q: q.push(T, {}, timeout=math.inf), ValueError, "timeout", id="timeout-inf"),
    pytest.param(lambda q: q.push(T, {}, pool="pööl"), UsageError, "pool", id="pool-unicode"),
    pytest.param(lambda q: q.push(T, {}, pool=""), UsageError, "pool", id="pool-empty"),
    pytest.param(lambda q: q.push(T, {}, key=""), UsageError, "key", id="key-empty"),
    pytest.param(lambda q: q.push(T, {}, key=7), UsageError, "key", id="key-int"),
    pytest.param(lambda q: q.set_max_length(-1), ValueError, "max_length", id="max-length-negative"),
    pytest.param(lambda q: q.job("nope"), JobNotFound, "nope", id="job-unknown"),
    pytest.param(lambda q: q.cancel("nope"), JobNotFound, "nope", id="cancel-unknown"),
    pytest.param(lambda q: q.jobs("bogus"), UsageError, "unknown status", id="jobs-bad-status"),
    pytest.param(lambda q: Queue("q✓", broker=q.broker), UsageError, "queue name", id="queue-unicode"),
    pytest.param(lambda q: Queue("a b", broker=q.broker), UsageError, "queue name", id="queue-space"),
    pytest.param(lambda q: Queue("x", url="redis://127.0.0.1:1"), ConnectionFailed, "cannot reach", id="url-unreachable"),
    pytest.param(lambda q: Queue("x", url="http://x"), ConnectionFailed, "invalid server URL", id="url-http"),
    pytest.param(lambda q: Queue("x", url="redis://:notaport"), ConnectionFailed, "invalid server URL", id="url-bad-port"),
    pytest.param(lambda q: Queue("x", url="redis://[::1"), ConnectionFailed, "invalid server URL", id="url-broken-ipv6"),
    pytest.param(lambda q: Worker(modules=[]), UsageError, "module", id="worker-no-modules"),
    pytest.param(lambda q: Worker(modules=["os; rm"]), UsageError, "module", id="worker-bad-module"),
    pytest.param(lambda q: Worker(modules=["fftest_targets"], concurrency=0), UsageError, "concurrency", id="worker-concurrency-zero"),
    pytest.param(lambda q: Worker(modules=["fftest_targets"], concurrency="4"), UsageError, "concurrency", id="worker-concurrency-string"),
    pytest.param(lambda q: Worker(modules=["fftest_targets"], lease=-1), UsageError, "lease", id="worker-lease-negative"),
    pytest.param(lambda q: Worker(modules=["fftest_targets"], lease=math.nan), UsageError, "lease", id="worker-lease-nan"),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(API_CASES)), ids=[c.id for c in API_CASES])
def test_api_rejects_bad_input(case: int, vqueue: Queue) -> None:
    call, exc, match = API_CASES[case].values
    vqueue.push(T, {"x": -1})
    before = snapshot(vqueue)
    with pytest.raises(exc, match=match) as info:
        call(vqueue)
    # every deliberate error is one of the documented kinds, with a one-line message
    assert isinstance(info.value, TypeError | ValueError | fifoflow.FifoflowError)
    assert len(str(info.value).splitlines()) <= 1
    assert snapshot(vqueue) == before


def test_api_full_queue_adds_nothing(vqueue: Queue) -> None:
    vqueue.set_max_length(5)
    vqueue.push_many(T, [{"x": i} for i in range(4)])
    before = snapshot(vqueue)
    with pytest.raises(QueueFull) as info:
        vqueue.push_many(T, [{"x": 10}, {"x": 11}])
    assert (info.value.pending, info.value.max_length) == (4, 5)
    assert snapshot(vqueue) == before
    vqueue.push(T, {"x": 12})
    with pytest.raises(QueueFull):
        vqueue.push(T, {"x": 13})
    # de-duplicated pushes add nothing, so they are not refused
    vqueue.set_max_length(None)
    keyed = vqueue.push(T, {"x": 14}, key="k")
    vqueue.set_max_length(0)
    assert vqueue.push(T, {"x": 15}, key="k") == keyed


def test_api_requeue_unknown_ids_changes_nothing(vqueue: Queue) -> None:
    dead = vqueue.push("fftest_targets:boom", retries=0)
    _, claimed = claim(vqueue, "w", 1, ["default"], 30)
    complete(vqueue, claimed[0], "fail", "ValueError: boom")
    assert dead.status == "dead"
    before = snapshot(vqueue)
    assert vqueue.requeue(["nope", "*", ""]) == []
    assert vqueue.requeue(["*"]) == []  # "*" is no id: the dead job stays dead
    assert snapshot(vqueue) == before
    assert dead.status == "dead"


def test_api_wrong_password(auth_url: str) -> None:
    with pytest.raises(ConnectionFailed, match="refused the credentials") as info:
        Queue("x", url=auth_url.replace("redis://", "redis://:wrong@"))
    assert "wrong" not in str(info.value)
    with pytest.raises(ConnectionFailed, match="Authentication required"):
        Queue("x", url=auth_url)
    q = Queue("x", url=auth_url.replace("redis://", "redis://:s3cret@"))
    assert q.stats()["queued"] == 0
    q.close()


def test_api_unicode_params_round_trip(vqueue: Queue) -> None:
    job = vqueue.push("fftest_targets:echo", UNICODE, key="ключ")
    assert job.params == UNICODE
    assert job.key == "ключ"
    assert [j.params for j in vqueue.push_many("fftest_targets:echo", [UNICODE, {}])] == [
        UNICODE,
        {},
    ]


# -- fuzzing -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
#: Values JSON cannot hold (or would silently change): must be refused.
hostile = (
    st.sampled_from([math.nan, math.inf, -math.inf, b"x", {1, 2}, object(), 1j])
    | st.dictionaries(st.integers() | st.booleans() | st.none(), json_scalars, min_size=1)
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
)
any_values = st.recursive(
    json_scalars | hostile,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values three times in four, so accepted pushes get fuzzed as much as refused."""
    return st.one_of(good, good, good, bad)


targets = mostly(
    st.from_regex(TARGET_RE, fullmatch=True) | st.sampled_from([T, "os:system", "a.b.c:d"]),
    st.text(max_size=30) | st.sampled_from(["a:b:c", " a:b", "a:b ", "a.:b", "é:b"]),
)
ints = mostly(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([True, None, 1.5, "3", -1]),
)
seconds = mostly(
    st.none() | st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6),
    st.floats() | st.integers(max_value=0) | st.sampled_from(["1", True]),
)
#: Nested keys JSON would silently turn into strings ({"a": {1: 2}} -> {"a": {"1": 2}}).
coerced_keys = st.dictionaries(
    st.text(),
    st.dictionaries(
        st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False),
        json_scalars,
        min_size=1,
    ),
    min_size=1,
)
params_like = mostly(
    st.dictionaries(st.text(), json_values, max_size=5) | st.none(),
    st.dictionaries(st.text(), any_values, max_size=5) | json_values | hostile | coerced_keys,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=targets,
    params=st.lists(params_like, min_size=0, max_size=4),
    many=st.booleans(),
    priority=ints,
    retries=ints,
    delay=seconds,
    timeout=seconds,
)
def test_fuzz_push(
    vqueue: Queue,
    target: Any,
    params: list[Any],
    many: bool,
    priority: Any,
    retries: Any,
    delay: Any,
    timeout: Any,
) -> None:
    before = vqueue.job_ids()
    options = dict(priority=priority, retries=retries, delay=delay, timeout=timeout)
    try:
        if many:
            jobs = vqueue.push_many(target, params, **options)
        else:
            one = params[0] if params else None
            params = [one]
            jobs = [vqueue.push(target, one, **options)]
    except (TypeError, ValueError):
        assert vqueue.job_ids() == before, "a refused push queued something"
        return
    # accepted: everything it accepted is exactly what a worker will get back
    assert TARGET_RE.match(target)
    assert len(jobs) == len(params)
    assert len({j.id for j in jobs}) == len(jobs)
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    for job, p in zip(jobs, params, strict=True):
        record = vqueue.record(job.id)
        assert record is not None
        assert record["params"] == ({} if p is None else p)
        assert json.loads(json.dumps(record["params"])) == record["params"]
        assert (record["target"], record["priority"], record["retries"]) == (
            target,
            priority,
            3 if retries is None else retries,  # None: FIFOFLOW_RETRIES, 3 unless set
        )
    assert sorted(set(vqueue.job_ids()) - set(before)) == [j.id for j in jobs]
