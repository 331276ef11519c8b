"""Every exception fifoflow raises on purpose. The CLI maps them to exit codes."""

from __future__ import annotations

import redis


class FifoflowError(Exception):
    """Base class: an operation failed (CLI exit code 1)."""

    exit_code = 1


class UsageError(FifoflowError, ValueError):
    """Bad input or configuration from the user (CLI exit code 2)."""

    exit_code = 2


class ConnectionFailed(UsageError):
    """The server URL is malformed, unreachable, or refuses our credentials."""


class ServerError(FifoflowError):
    """The embedded server could not be started or stopped."""


class ServerConfigError(UsageError, ServerError):
    """The embedded server's configuration is invalid (bad input: exit code 2)."""


class QueueFull(FifoflowError):
    """A push would take the queue past its maximum length; nothing was added."""

    def __init__(self, queue: str, pending: int, max_length: int, adding: int = 1) -> None:
        super().__init__(
            f"queue {queue!r} is full: {pending} waiting + {adding} new > max_length {max_length}"
        )
        self.queue, self.pending, self.max_length = queue, pending, max_length


class JobNotFound(UsageError, LookupError):
    """No job with that id (it may have expired)."""

    def __init__(self, job_id: str, where: str = "") -> None:
        super().__init__(f"no job with id {job_id!r}" + (f" {where}" if where else ""))
        self.job_id = job_id


class JobFailed(FifoflowError):
    """The job ended dead (or cancelled), so it has no result."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        super().__init__(f"job {job_id} is {status}: {error or 'no error recorded'}")
        self.job_id, self.status, self.error = job_id, status, error


class ServerOutOfMemory(FifoflowError):
    """The server is at its ``maxmemory`` (policy ``noeviction``) and refused a write;
    nothing of that write was applied. Free memory or raise the limit, then retry."""


class NotReplicated(FifoflowError):
    """With ``FIFOFLOW_DURABILITY=replicated``: the primary applied a push or a completion
    but no replica confirmed it in time, so it is not acknowledged (a failover now could
    lose it). Sending the same call again is safe; workers do so until it lands."""


class NoRetry(Exception):
    """Raised by a target (or subclassed): the job is dead at once, never retried."""


def is_oom(e: redis.ResponseError) -> bool:
    """The server refused a write: it is at maxmemory (policy noeviction)."""
    return isinstance(e, redis.exceptions.OutOfMemoryError) or "used memory > 'maxmemory'" in str(e)


def out_of_memory(what: str) -> str:
    return (
        f"the server is out of memory (used memory > maxmemory, policy noeviction): {what} "
        "refused, nothing changed; free memory or raise maxmemory, then retry"
    )
