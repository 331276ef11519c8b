"""How many requests go to the Prefect API at once: as many as it takes without "busy".

A SQLite-backed Prefect API (Prefect's default: ``prefect server start`` without
PostgreSQL, or the local ephemeral one) takes one write at a time. Two children writing
at once collide: one gets 503 "database is busy" and is retried, which costs the server
CPU and the child time. Measured with ``bench/prefect_scaling.py`` (40 no-op children):
4 thread slots got 97-113 answers 503, 8 slots 243-280 (1 slot: 5-7), and ran x0.72 and
x0.53 the children/s of 1 slot; one request at a time gave x0.97 and x1.10, with 1-5.
Two at a time collided as often as no limit (113 at 4 slots).

So the limit learns, as TCP's window does: it starts at the number of slots, halves on a
503 and grows by one after ``GROW_AFTER`` answers in a row without one (longer after
growths that failed). A server that takes concurrent writes (PostgreSQL) never answers
"busy" and keeps every slot's request going at once; a SQLite one settles at one. The
limit is shared by all processes using the gate (its ``limit`` file).

The tokens are lock files (``flock``), so one gate serves the thread slots of a worker,
its process slots and every other worker of this machine on the same API and
``FIFOFLOW_HOME``; a process killed while it holds one gives it back as it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Answers in a row without a 503 before the limit grows by one (at least; see ``answered``).
GROW_AFTER = 32
GROW_AFTER_MAX = 1024


class ApiGate:
    """Up to ``limit`` requests at once, ``limit`` learnt between 1 and ``ceiling`` and
    kept in the folder's ``limit`` file, so that the processes sharing the tokens learn
    it together (a process slot sends one request at a time: alone it would never
    learn that it collides with the others)."""

    def __init__(self, directory: Path, ceiling: int, fresh: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ceiling = max(1, ceiling)
        self._calm = 0  # answers in a row without a 503
        self._grow_after = GROW_AFTER  # the calm run the next growth takes
        self._probing = False  # the limit grew and has not yet held for GROW_AFTER answers
        self.busy = 0  # 503 answers seen
        self._lock = threading.Lock()
        self._turn = itertools.count()  # which taken token the next waiter lines up for
        if fresh:
            self._update(lambda _: self.ceiling)

    @classmethod
    def for_api(cls, home: Path, api_url: str, ceiling: int) -> ApiGate | None:
        """A worker's gate to one API (by its URL) under ``home``, starting afresh at
        ``ceiling``; None where no lock files can be made there (a read-only home):
        requests then go ungated."""
        digest = hashlib.sha256(api_url.rstrip("/").encode()).hexdigest()[:16]
        try:
            return cls(home / "prefect-gate" / digest, ceiling, fresh=True)
        except OSError as e:
            log.warning("no Prefect API gate under %s (%s): requests are not limited", home, e)
            return None

    @property
    def limit(self) -> int:
        """How many requests may go at once now."""
        try:
            fd = os.open(self.directory / "limit", os.O_RDONLY)
        except FileNotFoundError:
            return self.ceiling
        try:
            return self._clip(os.pread(fd, 16, 0))
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Hold one token while a request is sent and answered."""
        fd = self._acquire()
        try:
            yield
        finally:
            os.close(fd)  # closing the file gives its lock back

    def answered(self, status: int) -> None:
        """Learn from one answer: a 503 halves the limit; a calm run grows it by one. A
        503 soon after a growth (a failed probe) doubles the calm run the next one takes,
        up to ``GROW_AFTER_MAX``: a SQLite server then collides rarely, while a server
        that was busy for a moment gets its limit back quickly."""
        with self._lock:
            if status == 503:
                self.busy += 1
                self._calm = 0
                if self._probing:
                    self._probing = False
                    self._grow_after = min(2 * self._grow_after, GROW_AFTER_MAX)
                self._update(lambda limit: max(1, limit // 2))
                return
            self._calm += 1
            if self._probing and self._calm >= GROW_AFTER:
                self._probing, self._grow_after = False, GROW_AFTER  # the growth held
            if self._calm >= self._grow_after:
                self._calm = 0
                self._probing = self._update(lambda limit: min(self.ceiling, limit + 1))

    def _update(self, change: Callable[[int], int]) -> bool:
        """Change the shared limit; whether it changed."""
        fd = os.open(self.directory / "limit", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one process at a time reads and writes it
            before = self._clip(os.pread(fd, 16, 0))
            after = change(before)
            if after != before or os.fstat(fd).st_size == 0:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(after).encode(), 0)
                log.debug("Prefect API gate %s: %d -> %d", self.directory.name, before, after)
            return after != before
        finally:
            os.close(fd)

    def _clip(self, data: bytes) -> int:
        try:
            return min(self.ceiling, max(1, int(data)))
        except ValueError:  # not written yet
            return self.ceiling

    def _acquire(self) -> int:
        limit = self.limit
        for token in range(limit):  # a free token, if there is one
            fd = self._open(token)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        fd = self._open(next(self._turn) % limit)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # all taken: wait in line for one
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, token: int) -> int:
        return os.open(self.directory / f"token-{token}", os.O_RDWR | os.O_CREAT, 0o600)
