"""Who may change a queue from the dashboard: nobody unless it runs with actions on; then
only a request that carries the token, and, from a browser form, passes the CSRF checks.

* **Token**: ``X-Fifoflow-Token`` header, or the ``token`` field of the form. A browser
  cannot send a custom header to another origin without a CORS preflight, which the
  dashboard never grants: a header-borne token is enough on its own.
* **Form posts**: the ``Origin`` (or ``Referer``) must be the dashboard's own, a
  ``Sec-Fetch-Site`` other than same-origin is refused, and the form's ``csrf`` field must
  equal the ``ff_csrf`` cookie (random per browser session, ``SameSite=Strict``).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import FifoflowError, JobNotFound, UsageError

TOKEN_HEADER = "x-fifoflow-token"
CSRF_COOKIE = "ff_csrf"


class Refused(Exception):
    """An action refused: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def new_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_of(request: Request) -> tuple[str, bool]:
    """The session's CSRF token, and whether it is new (then the response sets it)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) >= 32:
        return cookie, False
    return secrets.token_urlsafe(32), True


def same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme else ""


@dataclass(frozen=True, slots=True)
class Guard:
    allow_actions: bool
    token: str | None

    async def check(self, request: Request) -> dict[str, str]:
        """The request's form fields, if it may act; else ``Refused``."""
        if not self.allow_actions or not self.token:
            raise Refused(403, "actions are off: start the dashboard with --allow-actions")
        form = await read_form(request)
        header = request.headers.get(TOKEN_HEADER, "")
        if header:
            if not same(header, self.token):
                raise Refused(403, "wrong token")
            self._check_origin(request, required=False)
            return form
        self._check_origin(request, required=True)
        if not same(form.get("csrf", ""), request.cookies.get(CSRF_COOKIE, "")):
            raise Refused(403, "CSRF check failed: reload the page and try again")
        if not form.get("token"):
            raise Refused(403, "the dashboard's token is required for actions")
        if not same(form["token"], self.token):
            raise Refused(403, "wrong token")
        return form

    @staticmethod
    def _check_origin(request: Request, required: bool) -> None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        site = request.headers.get("sec-fetch-site", "")
        if site and site not in ("same-origin", "none"):
            raise Refused(403, f"cross-site request refused ({site})")
        origin = request.headers.get("origin") or _origin(request.headers.get("referer", ""))
        if origin and origin.lower() != own:
            raise Refused(403, f"cross-origin request refused (from {origin})")
        if required and not origin:
            raise Refused(403, "a form post must say where it comes from (Origin or Referer)")


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded body (or none); 64 KiB at most."""
    body = await request.body()
    if len(body) > 65536:
        raise Refused(413, "form too large")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if not body:
        return {}
    if ctype != "application/x-www-form-urlencoded":
        raise Refused(415, "send the form urlencoded")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    # Checkboxes repeat a name (``ids``): their values are joined; any other field counts once.
    return {k: ",".join(v) if k == "ids" else v[0] for k, v in fields.items()}


def local_path(path: str, default: str = "/") -> str:
    """``path`` if it stays on this site (no scheme, no host), else ``default``."""
    parts = urlsplit(path)
    odd = path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in path)
    if parts.scheme or parts.netloc or not path.startswith("/") or odd:
        return default
    return path


def status_of(e: Exception) -> int:
    """The HTTP status of a refusal or of a failed operation."""
    if isinstance(e, Refused):
        return e.status
    if isinstance(e, JobNotFound):
        return 404
    if isinstance(e, FifoflowError) and not isinstance(e, UsageError):
        return 409
    return 400


class SecurityHeaders:
    """Every response: no framing, no inline script, no caching, no referrer abroad."""

    HEADERS = (
        (b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'; "
         b"img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-store"),
    )  # fmt: skip

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
