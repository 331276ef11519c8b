"""Serving the dashboard with uvicorn on a socket bound here (so port 0 works and the real
port is known before the first request), in the foreground or in a thread."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from types import FrameType

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (OSError if it cannot be had)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """Ends the live streams first on a stop signal: they would hold the shutdown."""

    def __init__(self, config: uvicorn.Config, closing: threading.Event) -> None:
        super().__init__(config)
        self.closing = closing

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.closing.set()
        super().handle_exit(sig, frame)


class DashboardServer:
    """``app`` on ``host:port``; ``run()`` blocks, ``start()``/``stop()`` use a thread."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 8765) -> None:
        if not is_loopback(host):
            log.warning("dashboard: listening on %s, beyond this machine", host)
        self.sock = bind(host, port)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.closing: threading.Event = getattr(app.state, "closing", threading.Event())
        self.server = _Server(config, self.closing)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, timeout: float = 10.0) -> DashboardServer:
        self.thread = threading.Thread(target=self.run, name="ffdash", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.closing.set()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
