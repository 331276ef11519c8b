"""The web dashboard: Starlette + Jinja2 pages with server-sent events, served by uvicorn.

``create_app(broker, Config(...))`` builds the application (``app``), ``DashboardServer``
serves it; ``fifoflow dashboard`` is the command. Pages and routes: see ``app``.
"""

from __future__ import annotations

from .app import Config, create_app
from .server import DashboardServer, is_loopback

__all__ = ["Config", "DashboardServer", "create_app", "is_loopback"]
