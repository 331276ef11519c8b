"""Prefect's API client, made quick where a SQLite-backed API is merely busy."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import temporary_settings

from .gate import ApiGate


@contextlib.contextmanager
def api_client() -> Iterator[SyncPrefectClient]:
    """A Prefect API client that retries "busy" answers (503) within milliseconds.

    A SQLite-backed API (the ephemeral one, or ``prefect server start`` without Postgres)
    answers 503 when two writes collide; Prefect's client then sleeps 2 s or more before
    it tries again, which would cost a child that much for a few milliseconds of lock,
    and makes slots that collide more often slower together than one alone. A 503 is
    retried here after 10 ms, 20 ms, ... 0.5 s; anything else, and a 503 that lasts, is
    handed to Prefect's own retries unchanged (CSRF tokens and all).
    """
    with get_client(sync_client=True) as client:
        yield quick_retry(client)


def quick_retry(client: SyncPrefectClient, gate: ApiGate | None = None) -> SyncPrefectClient:
    """Make ``client`` retry "busy" answers within milliseconds (see ``api_client``); also
    for a client made elsewhere, such as the one Prefect's engine runs flows with (its
    ``SyncClientContext``). Idempotent: the first call's gate stays."""
    http = getattr(client, "_client", None)
    prefect_retry = getattr(http, "_send_with_retry", None)
    if isinstance(http, httpx.Client) and prefect_retry and not hasattr(http, "_fifoflow_quick"):
        setattr(http, "_send_with_retry", _quick_first(prefect_retry, gate))  # noqa: B010
        setattr(http, "_fifoflow_quick", True)  # noqa: B010
    return client


def _quick_first(
    prefect_retry: Callable[..., httpx.Response], gate: ApiGate | None
) -> Callable[..., httpx.Response]:
    """Prefect's retry loop, with each of its sends retrying a 503 quickly first, and
    waiting for a token of ``gate`` while it is sent."""

    def gated(send: Callable[..., httpx.Response], *a: Any, **k: Any) -> httpx.Response:
        if gate is None:
            return send(*a, **k)
        with gate.request():
            response = send(*a, **k)
        gate.answered(response.status_code)
        return response

    def send_with_retry(
        request: httpx.Request,
        send: Callable[..., httpx.Response],
        send_args: tuple[Any, ...],
        send_kwargs: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> httpx.Response:
        def quick(req: httpx.Request, *a: Any, **k: Any) -> httpx.Response:
            delay = 0.01
            for _ in range(8):
                response = gated(send, req, *a, **k)
                if response.status_code != 503:
                    return response
                response.close()
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)
            return gated(send, req, *a, **k)

        return prefect_retry(request, quick, send_args, send_kwargs, *args, **kwargs)

    return send_with_retry


#: Without PREFECT_API_URL, Prefect starts a local API server, which creates its database
#: the first time: on a small or busy machine that outlasts Prefect's default of 20 s.
EPHEMERAL_STARTUP_TIMEOUT = 120


@contextlib.contextmanager
def patient_startup() -> Iterator[None]:
    """A longer start-up timeout for Prefect's local API, unless the user set one."""
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ:
        yield
        return
    updates = {"server.ephemeral.startup_timeout_seconds": EPHEMERAL_STARTUP_TIMEOUT}
    with temporary_settings(updates=updates):
        yield
