"""Prefect's API client, made quick where a SQLite-backed API is merely busy."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client


@contextlib.contextmanager
def api_client() -> Iterator[SyncPrefectClient]:
    """A Prefect API client that retries "busy" answers (503) within milliseconds.

    A SQLite-backed API (the ephemeral one, or ``prefect server start`` without Postgres)
    answers 503 when two writes collide; Prefect's client then sleeps 2 s or more before
    it tries again, which would cost a child that much for a few milliseconds of lock. A
    503 is retried here after 10 ms, 20 ms, ... 0.5 s; anything else, and a 503 that
    lasts, is handed to Prefect's own retrying ``send`` unchanged. Servers that require
    CSRF tokens keep Prefect's client as it is.
    """
    with get_client(sync_client=True) as client:
        yield quick_retry(client)


def quick_retry(client: SyncPrefectClient) -> SyncPrefectClient:
    """Make ``client`` retry "busy" answers within milliseconds (see ``api_client``); for
    a client made elsewhere, such as the one Prefect's engine runs flows with (its
    ``SyncClientContext``). Idempotent."""
    http = getattr(client, "_client", None)
    if (
        isinstance(http, httpx.Client)
        and not getattr(http, "enable_csrf_support", True)
        and not getattr(http, "_fifoflow_quick", False)
    ):
        setattr(http, "send", _quick_retry_send(http, http.send))  # noqa: B010
        setattr(http, "_fifoflow_quick", True)  # noqa: B010
    return client


def _quick_retry_send(
    http: httpx.Client, prefect_send: Callable[..., httpx.Response]
) -> Callable[..., httpx.Response]:
    plain_send = httpx.Client.send

    def send(request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        delay = 0.01
        for _ in range(8):
            try:
                response = plain_send(http, request, *args, **kwargs)
            except httpx.HTTPError:
                break
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)
        return prefect_send(request, *args, **kwargs)

    return send
