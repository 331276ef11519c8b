"""Turn ``FIFOFLOW_URL`` (or the embedded server) into a checked redis-py client."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

import redis

from . import server, topology
from .errors import ConnectionFailed, UsageError
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")
#: Replicated deployments (``topology``): ``redis+cluster://``, ``redis+sentinel://``.
MULTI_SCHEMES = topology.SCHEMES


def resolve_url(url: str | None, settings: Settings | None = None) -> str:
    """The URL to use: the one given, else ``FIFOFLOW_URL``, else the embedded server's."""
    settings = settings or get_settings()
    url = url or settings.url
    if url:
        return url
    return server.ensure_running(settings.home, settings.appendfsync)


def redact(url: str) -> str:
    """The URL without its passwords (the server's, and a ``sentinel_password`` or any
    other ``*password`` query option), for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None and "password" not in parts.query.lower():
        return url
    if "@" in parts.netloc:
        auth, _, hosts = parts.netloc.rpartition("@")
        user, colon, _ = auth.partition(":")
        parts = parts._replace(netloc=f"{user}{colon and ':***'}@{hosts}")
    if "password" in parts.query.lower():
        query = re.sub(r"([^&=]*password[^&=]*)=[^&]*", r"\1=***", parts.query, flags=re.I)
        parts = parts._replace(query=query)
    return parts.geturl()


def connect(
    url: str | None = None,
    *,
    check: bool = True,
    settings: Settings | None = None,
    **kwargs: Any,
) -> redis.Redis:
    """A client with decoded responses, an explicit socket timeout and TCP keepalive.

    With ``check`` it pings first, so a bad URL or password fails here in a few seconds
    with one clear line, not on first use, and it refuses a server that evicts keys."""
    settings = settings or get_settings()
    url = resolve_url(url, settings)
    try:
        scheme = urlsplit(url).scheme
    except ValueError as e:  # e.g. "Invalid IPv6 URL"; the URL may hold a password: not shown
        raise ConnectionFailed(f"invalid server URL: {e}") from None
    if scheme not in SCHEMES and scheme not in MULTI_SCHEMES:
        raise ConnectionFailed(
            f"invalid server URL {redact(url)!r}: the scheme must be redis://, rediss://, unix://, "
            "redis+cluster://, redis+sentinel:// (or rediss+ either, over TLS)"
        )
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        "health_check_interval": 30,
    }
    if scheme != "unix":
        options["socket_keepalive"] = True
    options.update(kwargs)
    try:
        if scheme in MULTI_SCHEMES:
            client: redis.Redis = topology.client_from_url(url, options)
        else:
            client = redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as e:
        raise ConnectionFailed(f"invalid server URL {redact(url)!r}: {e}") from None
    if check:
        ping(client, url)
        info = server_info(client)
        check_version(info, url)
        if not settings.allow_eviction:
            refuse_eviction(info, url)
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


def server_info(client: redis.Redis) -> dict[str, Any]:
    """``INFO server`` and ``INFO memory`` (which managed servers that refuse ``CONFIG``
    still answer); empty where the server refuses ``INFO`` too."""
    try:
        return {**client.info("server"), **client.info("memory")}
    except redis.ResponseError:
        return {}


def check_version(info: dict[str, Any], url: str) -> None:
    """Redis functions (``FUNCTION LOAD``, ``FCALL``) need Redis 7 (Valkey reports 7.2)."""
    version = str(info.get("redis_version", ""))
    major = version.split(".")[0]
    if major.isdigit() and int(major) < 7:
        raise UsageError(
            f"the server at {redact(url)} is Redis {version}; fifoflow needs Redis 7 or later "
            "(or Valkey 7.2 or later)"
        )


def refuse_eviction(info: dict[str, Any], url: str) -> None:
    """An evicting server drops job records and index entries silently under memory
    pressure: acknowledged jobs would vanish. Refuse it, with one line."""
    policy = info.get("maxmemory_policy")
    if policy and policy != "noeviction":
        raise UsageError(
            f"the server at {redact(url)} evicts keys (maxmemory-policy {policy}), which "
            "loses jobs: set maxmemory-policy noeviction, or FIFOFLOW_ALLOW_EVICTION=1 to "
            "accept that risk"
        )
