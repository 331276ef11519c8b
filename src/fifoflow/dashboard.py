"""A small read-only web dashboard: one HTML page polling a JSON API, plus /metrics.

Served by the standard library's threading HTTP server; binds to loopback unless told
otherwise. Routes: ``/`` (page), ``/api/status``, ``/api/jobs?queue=Q&status=S&limit=N``,
``/metrics`` (Prometheus).
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

from . import metrics
from .broker import Broker
from .errors import FifoflowError
from .queue import Queue

log = logging.getLogger(__name__)


def page() -> str:
    return (resources.files("fifoflow") / "static" / "dashboard.html").read_text()


def make_handler(broker: Broker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

        def _send(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            args = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                if url.path == "/":
                    self._send(200, page(), "text/html; charset=utf-8")
                elif url.path == "/api/status":
                    snap = metrics.snapshot(broker)
                    self._send(200, json.dumps(snap), "application/json")
                elif url.path == "/api/jobs":
                    q = Queue(args.get("queue") or None, broker=broker)
                    limit = int(args.get("limit", "100"))
                    jobs = q.jobs(args.get("status") or None)[-limit:]
                    self._send(200, json.dumps(jobs), "application/json")
                elif url.path == "/metrics":
                    body = metrics.render(broker).decode()
                    self._send(200, body, metrics.CONTENT_TYPE)
                else:
                    self._send(404, json.dumps({"error": "not found"}), "application/json")
            except (FifoflowError, ValueError) as e:
                self._send(400, json.dumps({"error": str(e)}), "application/json")
            except redis.RedisError as e:
                self._send(503, json.dumps({"error": f"server error: {e}"}), "application/json")

    return Handler


def make_server(host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((host, port), make_handler(Broker.connect()))
    httpd.daemon_threads = True
    return httpd


def serve(host: str = "127.0.0.1", port: int = 8765) -> None:
    httpd = make_server(host, port)
    log.info("dashboard on http://%s:%d/", host, httpd.server_port)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
