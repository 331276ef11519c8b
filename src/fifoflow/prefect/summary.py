"""The dispatcher's summary artifact: one table row per job (its latest attempt), kept
current while the worker runs and published at the end."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

from prefect.artifacts import create_table_artifact

from ..execution import JobInfo

log = logging.getLogger("fifoflow.prefect")


def artifact_key(queues: list[str]) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(queues).lower()).strip("-") or "queue"
    return f"fifoflow-{slug}"[:100].rstrip("-")


class Summary:
    def __init__(self, worker_name: str, queues: list[str], rows: int, interval: float) -> None:
        self.worker_name, self.queues = worker_name, queues
        self.max_rows, self.interval = rows, interval
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_publish = time.monotonic()

    def note(
        self,
        job: JobInfo,
        params: dict[str, Any],
        state: str,
        duration: float,
        run_id: str | None,
        final: bool = True,
    ) -> None:
        text = json.dumps(params, separators=(",", ":"), default=str)
        row = {
            "job": job.id,
            "queue": job.queue,
            "target": job.target,
            "params": text if len(text) <= 200 else text[:197] + "...",
            "state": state,
            "attempts": job.attempt,
            "duration_s": round(duration, 3),
            "flow_run_id": run_id or "",
        }
        with self._lock:
            self._rows[job.id] = row  # a job keeps its place; its latest attempt shows
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
            if final:
                self.counts[state] += 1
            due = final and time.monotonic() - self._last_publish >= self.interval
        if due:
            self.publish(final=False)

    def mark(self, job_id: str, run_id: str, state: str) -> None:
        """A row's run ended without the slot seeing it (abandoned): say how."""
        with self._lock:
            row = self._rows.get(job_id)
            if row is not None and row["flow_run_id"] == run_id:
                row["state"] = state
                self.counts[state] += 1

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._rows.values()]

    def publish(self, final: bool) -> None:
        if not self._publish_lock.acquire(blocking=final):
            return  # another slot is publishing right now
        try:
            with self._lock:
                rows = [dict(r) for r in self._rows.values()]
                counts = dict(self.counts)
                self._last_publish = time.monotonic()
            runs = sum(counts.values())
            by_state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
            description = (
                f"**fifoflow worker `{self.worker_name}`** ({'final' if final else 'so far'}): "
                f"{runs} child flow run(s): {by_state}. One row per job, its latest attempt"
                + (f"; the last {self.max_rows} jobs only." if len(rows) >= self.max_rows else ".")
            )
            table: list[dict[str, Any]] = rows or [{"job": "(no jobs)"}]
            create_table_artifact(
                table=table, key=artifact_key(self.queues), description=description
            )
        except Exception as e:  # the summary must never take the worker down
            log.warning(
                "worker %s: could not publish the summary artifact: %s", self.worker_name, e
            )
        finally:
            self._publish_lock.release()
