"""The gate on concurrent Prefect API requests: it learns its limit from "busy" answers,
lets no more through than the limit, and a process killed holding a token gives it back."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fifoflow.prefect.gate import GROW_AFTER, GROW_AFTER_MAX, ApiGate

pytestmark = pytest.mark.timeout(60)


def test_a_busy_answer_halves_the_limit_and_a_calm_run_grows_it(tmp_path: Path) -> None:
    gate = ApiGate(tmp_path, ceiling=8)
    assert gate.limit == 8  # optimistic: a server that takes concurrent writes loses nothing
    gate.answered(503)
    assert gate.limit == 4
    gate.answered(503)
    gate.answered(503)
    gate.answered(503)
    assert gate.limit == 1  # never below one
    for _ in range(GROW_AFTER - 1):
        gate.answered(200)
    assert gate.limit == 1
    gate.answered(201)
    assert gate.limit == 2
    gate.answered(200)
    gate.answered(503)  # the growth failed: back to 1, and the next probe waits twice as long
    assert gate.limit == 1
    for _ in range(2 * GROW_AFTER - 1):
        gate.answered(200)
    assert gate.limit == 1
    gate.answered(200)
    assert gate.limit == 2
    for _ in range(GROW_AFTER):  # this growth held: the next ones come every GROW_AFTER
        gate.answered(200)
    assert gate.limit == 3
    for _ in range(GROW_AFTER * 20):
        gate.answered(200)
    assert gate.limit == 8  # up to the ceiling, not past it
    assert gate.busy == 5


def test_failed_probes_space_out_the_next_ones_up_to_a_bound(tmp_path: Path) -> None:
    gate = ApiGate(tmp_path, ceiling=4)
    for _ in range(3):
        gate.answered(503)
    waits = []
    for _ in range(8):  # each probe collides at once, as on a SQLite server
        calm = 0
        while gate.limit == 1:
            gate.answered(200)
            calm += 1
        waits.append(calm)
        gate.answered(503)
    assert waits == [32, 64, 128, 256, 512, 1024, 1024, 1024]
    assert GROW_AFTER == 32 and GROW_AFTER_MAX == 1024


def test_the_gate_lets_through_no_more_requests_than_its_limit(tmp_path: Path) -> None:
    gate = ApiGate(tmp_path, ceiling=3)
    gate.answered(503)  # limit 1
    assert gate.limit == 1
    held = threading.Event()
    release = threading.Event()
    second = threading.Event()

    def first() -> None:
        with gate.request():
            held.set()
            release.wait(30)

    def other() -> None:
        with gate.request():
            second.set()

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(30)
    b = threading.Thread(target=other)
    b.start()
    assert not second.wait(0.3)  # the one token is taken: the second request waits
    release.set()
    assert second.wait(30)  # and goes once the first is answered
    a.join(30)
    b.join(30)

    for _ in range(GROW_AFTER):
        gate.answered(200)
    assert gate.limit == 2
    held.clear(), release.clear(), second.clear()
    a = threading.Thread(target=first)
    a.start()
    assert held.wait(30)
    b = threading.Thread(target=other)
    b.start()
    assert second.wait(30)  # a second token: both at once
    release.set()
    a.join(30)
    b.join(30)


HOLDER = """
import sys, time
from pathlib import Path
from fifoflow.prefect.gate import ApiGate
gate = ApiGate(Path(sys.argv[1]), ceiling=1)
with gate.request():
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_process_killed_while_it_holds_a_token_gives_it_back(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        fd = os.open(tmp_path / "token-0", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken by the other process
        finally:
            os.close(fd)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        gate = ApiGate(tmp_path, ceiling=1)
        done = threading.Event()

        def take() -> None:
            with gate.request():
                done.set()

        threading.Thread(target=take, daemon=True).start()
        assert done.wait(30)  # the dead holder's token is free
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_home_where_no_lock_file_can_be_made_leaves_requests_ungated(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert ApiGate.for_api(blocker, "http://127.0.0.1:4200/api", 4) is None
    gate = ApiGate.for_api(tmp_path, "http://127.0.0.1:4200/api/", 4)
    assert gate is not None and gate.directory.parent == tmp_path / "prefect-gate"
    same = ApiGate.for_api(tmp_path, "http://127.0.0.1:4200/api", 4)
    assert same is not None and same.directory == gate.directory  # one gate per API
