"""fifoflow: a FIFO, greedy, lossless job queue on Redis/Valkey for Prefect flows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConnectionFailed,
    FifoflowError,
    JobFailed,
    JobNotFound,
    NoRetry,
    NotReplicated,
    QueueFull,
    ServerError,
    ServerOutOfMemory,
    UsageError,
)
from .execution import Cancelled, check_cancelled, current_job, no_retry
from .queue import Job, Queue
from .workflows import chain

if TYPE_CHECKING:
    from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ConnectionFailed",
    "FifoflowError",
    "Job",
    "JobFailed",
    "JobNotFound",
    "NoRetry",
    "NotReplicated",
    "Queue",
    "QueueFull",
    "ServerError",
    "ServerOutOfMemory",
    "UsageError",
    "Worker",
    "chain",
    "check_cancelled",
    "current_job",
    "no_retry",
]


def __getattr__(name: str) -> Any:
    # The worker pulls in threading machinery producers do not need; import it on demand.
    if name == "Worker":
        from .worker import Worker

        return Worker
    raise AttributeError(name)
