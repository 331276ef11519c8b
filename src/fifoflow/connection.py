"""Turn ``FIFOFLOW_URL`` (or the embedded server) into a checked redis-py client."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis

from . import server
from .errors import ConnectionFailed
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")


def resolve_url(url: str | None, settings: Settings | None = None) -> str:
    """The URL to use: the one given, else ``FIFOFLOW_URL``, else the embedded server's."""
    settings = settings or get_settings()
    url = url or settings.url
    if url:
        return url
    return server.ensure_running(settings.home, settings.appendfsync)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def connect(url: str | None = None, *, check: bool = True, **kwargs: Any) -> redis.Redis:
    """A client with decoded responses; with ``check`` it pings first, so a bad URL or
    password fails here in a few seconds with one clear line, not on first use."""
    settings = get_settings()
    url = resolve_url(url, settings)
    try:
        scheme = urlsplit(url).scheme
    except ValueError as e:  # e.g. "Invalid IPv6 URL"; the URL may hold a password: not shown
        raise ConnectionFailed(f"invalid server URL: {e}") from None
    if scheme not in SCHEMES:
        raise ConnectionFailed(
            f"invalid server URL {redact(url)!r}: the scheme must be redis://, rediss:// or unix://"
        )
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": 30,
    }
    options.update(kwargs)
    try:
        client: redis.Redis = redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as e:
        raise ConnectionFailed(f"invalid server URL {redact(url)!r}: {e}") from None
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.AuthenticationError as e:
        raise ConnectionFailed(f"server at {redact(url)} refused the credentials: {e}") from None
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise ConnectionFailed(f"server at {redact(url)} needs a password: {e}") from None
        raise ConnectionFailed(f"server at {redact(url)} answered: {e}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConnectionFailed(f"cannot reach the server at {redact(url)}: {msg}") from None
