"""Prefect mode: the worker is a Prefect parent flow run, every job a child flow run of it.

``worker`` holds ``PrefectWorker`` (the dispatcher flow), ``children`` how a job becomes a
child flow run, ``client`` a quick-retrying API client, ``summary`` the artifact.
Importing this package needs Prefect (``pip install 'fifoflow[prefect]'``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ..errors import UsageError

try:
    import prefect  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise UsageError(
        f"Prefect mode needs Prefect ({e}); install it with: pip install 'fifoflow[prefect]'"
    ) from None

from ..execution import JobInfo, current_job
from .attempts import CHILD_TAG
from .children import ChildRunFailed, make_child_flow
from .client import api_client
from .worker import DISPATCHER_FLOW, PrefectWorker

__all__ = [
    "CHILD_TAG",
    "DISPATCHER_FLOW",
    "ChildRunFailed",
    "JobInfo",
    "PrefectWorker",
    "api_client",
    "current_job",
    "make_child_flow",
    "quiet_prefect_console",
]


@contextlib.contextmanager
def quiet_prefect_console(level: int = logging.CRITICAL + 1) -> Iterator[None]:
    """Raise the level of Prefect's console log handlers for a while (the API still gets
    every log line): for live terminal views such as ``fifoflow demo``."""
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers: list[tuple[logging.Handler, int]] = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            for h in logger.handlers:
                if isinstance(h, PrefectConsoleHandler):
                    handlers.append((h, h.level))
                    h.setLevel(level)
    try:
        yield
    finally:
        for h, old in handlers:
            h.setLevel(old)
