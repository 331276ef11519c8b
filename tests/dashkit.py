"""Helpers of the dashboard tests: a real dashboard (uvicorn in a thread) on a real server,
plain HTTP requests, and the server's command counters."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from fifoflow.broker import Broker
from fifoflow.dashboard import Config, DashboardServer, create_app
from fifoflow.settings import Settings


@dataclass
class Dash:
    url: str
    broker: Broker
    config: Config

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return request("GET", self.url + path, headers=headers)

    def json(self, path: str) -> Any:
        r = self.get(path)
        assert r.status == 200, (path, r.status, r.text[:500])
        return json.loads(r.text)

    def post(
        self, path: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Response:
        body = urllib.parse.urlencode(form).encode()
        h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return request("POST", self.url + path, body, h)


@dataclass
class Response:
    status: int
    text: str
    headers: dict[str, str]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def request(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with _opener.open(req, timeout=30) as r:
            return Response(
                r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
            )
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return Response(e.code, text, {k.lower(): v for k, v in e.headers.items()})


@contextlib.contextmanager
def dashboard(url: str, settings: Settings | None = None, **config: Any) -> Iterator[Dash]:
    """A dashboard on ``url``, on a free loopback port, stopped at the end."""
    broker = Broker.connect(url, settings=settings)
    cfg = Config(**config)
    server = DashboardServer(create_app(broker, cfg), "127.0.0.1", 0).start()
    try:
        yield Dash(server.url, broker, cfg)
    finally:
        server.stop()
        broker.close()


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (the counting commands left out)."""
    stats = client.info("commandstats")
    out = {}
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command in ("info", "config|resetstat", "config"):
            continue
        out[command] = int(fields["calls"])
    return out


def calls_of(client: redis.Redis, action: Any) -> tuple[int, dict[str, int]]:
    """How many commands the server ran for ``action()`` (scripts' own calls included)."""
    client.config_resetstat()
    action()
    calls = command_calls(client)
    return sum(calls.values()), calls


def sse_events(url: str, count: int, timeout: float = 20.0) -> Iterator[str]:
    """The data of the first ``count`` ``update`` events of a server-sent events stream."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("content-type", "").startswith("text/event-stream")
        event, data, seen = "", [], 0
        while seen < count:
            line = r.fp.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "":
                if event == "update":
                    seen += 1
                    yield "\n".join(data)
                event, data = "", []
    finally:
        conn.close()
