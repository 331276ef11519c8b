"""The dashboard's routes: HTML pages (Jinja2), their JSON data, server-sent events that
re-render the live parts, the actions (off unless allowed) and Prometheus ``/metrics``.

Pages: ``/`` overview, ``/timeline`` per-slot Gantt chart, ``/jobs`` listing, ``/jobs/Q/ID``
one job, ``/dead`` dead letters. JSON: ``/api/overview`` (also ``/api/status``),
``/api/timeline``, ``/api/jobs``, ``/api/jobs/Q/ID``, ``/api/dead``; ``POST /api/jobs``
pushes jobs (``push.py``; off unless allowed). Events:
``/events/overview``, ``/events/timeline``. Actions (POST): ``/actions/requeue``,
``/actions/purge``, ``/actions/cancel``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import redis
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import metrics
from ..broker import Broker
from ..errors import FifoflowError, UsageError
from ..queue import STATUSES, Queue
from . import filters, views
from .push import make_endpoint
from .rates import Sampler
from .security import (
    CSRF_COOKIE,
    TOKEN_HEADER,
    Guard,
    Refused,
    SecurityHeaders,
    csrf_of,
    local_path,
    status_of,
)

log = logging.getLogger(__name__)


@dataclass
class Config:
    """How one dashboard runs. ``token`` is required for actions (and only with them)."""

    allow_actions: bool = False
    allow_push: bool = False  # POST /api/jobs (dashboard/push.py)
    token: str | None = None
    prefect_ui: str = "http://127.0.0.1:4200"
    sample_every: float = 2.0  # seconds between counter samples (0: only on page reads)
    window: float = 600.0  # seconds of rates history and of the throughput chart
    live_every: float = 1.0  # seconds between server-sent updates
    page_size: int = 50
    timeline_count: int = 2000  # attempts the timeline reads at most
    push_limit: int = 16 * 1024 * 1024  # bytes of a POST /api/jobs body at most


def create_app(broker: Broker, config: Config | None = None) -> Starlette:
    cfg = config or Config()
    sampler = Sampler(broker, cfg.sample_every, cfg.window)
    closing = threading.Event()  # set when the server stops: live streams end
    guard = Guard(cfg.allow_actions, cfg.token)
    env = Environment(
        loader=PackageLoader("fifoflow.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
    )
    filters.install(env)

    # -- helpers ---------------------------------------------------------------------------

    def args(request: Request) -> dict[str, Any]:
        qp = request.query_params
        queue = qp.get("queue") or next(iter(broker.queues()), broker.settings.queue)
        status = qp.get("status") or None
        if status is not None and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        return {
            "queue": Queue(queue, broker=broker).name,  # validated
            "status": status,
            "pool": qp.get("pool") or None,
            "target": qp.get("target") or None,
            "oldest_first": qp.get("order") == "oldest",
            "limit": filters.bounded_int(qp.get("limit"), cfg.page_size, 1, 500, "limit"),
            "cursor": qp.get("cursor") or None,
            "minutes": filters.bounded_int(qp.get("minutes"), 5, 1, 60, "minutes"),
        }

    def render(name: str, request: Request, ctx: dict[str, Any], status: int = 200) -> Response:
        csrf, new = csrf_of(request)
        html = env.get_template(name).render(
            request=request, csrf=csrf, cfg=cfg, queues=broker.queues(), **ctx
        )
        response = HTMLResponse(html, status)
        if new:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def fragment(name: str, ctx: dict[str, Any]) -> str:
        return env.get_template(name).render(cfg=cfg, **ctx)

    def overview_data() -> dict[str, Any]:
        return views.overview(broker, sampler)

    def timeline_data(a: dict[str, Any]) -> dict[str, Any]:
        return views.timeline(broker, a["queue"], a["minutes"], cfg.timeline_count)

    def jobs_data(a: dict[str, Any], status: str | None = None) -> dict[str, Any]:
        keep = ("status", "pool", "target", "oldest_first", "limit", "cursor")
        kw = {k: a[k] for k in keep}
        if status is not None:
            kw["status"] = status
        data = views.jobs(broker, a["queue"], **kw)
        if a["cursor"]:
            data["first_url"] = "?" + urlencode({k: v for k, v in request_args(a).items() if v})
        if data["next"]:
            data["next_url"] = "?" + urlencode(
                {k: v for k, v in request_args(a, cursor=data["next"]).items() if v}
            )
        return data

    def request_args(a: dict[str, Any], **change: Any) -> dict[str, Any]:
        out = {
            "queue": a["queue"],
            "status": a["status"] or "",
            "pool": a["pool"] or "",
            "target": a["target"] or "",
            "order": "oldest" if a["oldest_first"] else "",
            "limit": a["limit"] if a["limit"] != cfg.page_size else "",
        }
        return {**out, **change}

    async def live(request: Request, make: Callable[[], str]) -> StreamingResponse:
        """Server-sent events: the fragment again whenever it changed (else a comment)."""

        async def events() -> AsyncIterator[str]:
            last = None
            while True:
                try:
                    html = await run_in_threadpool(make)
                except redis.RedisError as e:
                    html = f'<p class="error">server error: {filters.escape(str(e))}</p>'
                if html != last:
                    yield "event: update\n" + "".join(f"data: {x}\n" for x in html.split("\n"))
                    yield "\n"
                    last = html
                else:
                    yield ": unchanged\n\n"
                next_at = anyio.current_time() + cfg.live_every
                while anyio.current_time() < next_at:
                    if closing.is_set():
                        return  # the server stops: end the stream, the client reconnects
                    await anyio.sleep(min(0.1, cfg.live_every))

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- pages -----------------------------------------------------------------------------

    def overview_page(request: Request) -> Response:
        return render("overview.html", request, {"data": overview_data(), "page": "overview"})

    def timeline_page(request: Request) -> Response:
        a = args(request)
        ctx = {"data": timeline_data(a), "a": a, "page": "timeline"}
        return render("timeline.html", request, ctx)

    def jobs_page(request: Request) -> Response:
        a = args(request)
        ctx = {"data": jobs_data(a), "a": a, "page": "jobs", "statuses": STATUSES}
        return render("jobs.html", request, ctx)

    def job_page(request: Request) -> Response:
        queue = Queue(request.path_params["queue"], broker=broker).name
        data = views.job(broker, queue, request.path_params["id"])
        return render("job.html", request, {"data": data, "page": "jobs"})

    def dead_page(request: Request) -> Response:
        a = args(request)
        ctx = {"data": jobs_data(a, "dead"), "a": a, "page": "dead"}
        return render("dead.html", request, ctx)

    # -- JSON and events -------------------------------------------------------------------

    def api_overview(request: Request) -> Response:
        return JSONResponse(overview_data())

    def api_timeline(request: Request) -> Response:
        return JSONResponse(timeline_data(args(request)))

    def api_jobs(request: Request) -> Response:
        return JSONResponse(jobs_data(args(request)))

    def api_dead(request: Request) -> Response:
        return JSONResponse(jobs_data(args(request), "dead"))

    def api_job(request: Request) -> Response:
        queue = Queue(request.path_params["queue"], broker=broker).name
        return JSONResponse(views.job(broker, queue, request.path_params["id"]))

    async def events_overview(request: Request) -> Response:
        return await live(request, lambda: fragment("_overview.html", {"data": overview_data()}))

    async def events_timeline(request: Request) -> Response:
        a = await run_in_threadpool(args, request)
        return await live(
            request, lambda: fragment("_timeline.html", {"data": timeline_data(a), "a": a})
        )

    def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(broker), media_type=metrics.CONTENT_TYPE)

    def healthz(request: Request) -> Response:
        broker.client.ping()
        return JSONResponse({"ok": True})

    # -- actions ---------------------------------------------------------------------------

    async def action(request: Request) -> Response:
        name = request.path_params["name"]
        wants_json = bool(request.headers.get(TOKEN_HEADER)) or "json" in request.headers.get(
            "accept", ""
        )
        try:
            form = await guard.check(request)
            message = await run_in_threadpool(act, name, form)
        except (Refused, FifoflowError) as e:
            status = status_of(e)
            log.warning("dashboard: %s refused: %s", name, e)
            if wants_json:
                return JSONResponse({"error": str(e)}, status)
            return render("error.html", request, {"message": str(e)}, status)
        log.info("dashboard: %s", message)
        if wants_json:
            return JSONResponse({"ok": True, "message": message})
        back = local_path(form.get("back", "/"))
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}{urlencode({'msg': message})}", 303)

    def act(name: str, form: dict[str, str]) -> str:
        q = Queue(form.get("queue") or None, broker=broker)
        if name == "requeue":
            ids = None if form.get("all") else form.get("ids", "").replace(",", " ").split()
            if ids is not None and not ids:
                raise Refused(400, "no job to requeue")
            done = q.requeue(ids)
            return f"requeued {len(done)} dead job(s) of {q.name}"
        if name == "purge":
            return f"purged {q.purge_dead()} dead job(s) of {q.name}"
        if name == "cancel":
            job_id = form.get("id", "")
            ok = q.cancel(job_id)
            return f"cancelled {job_id}" if ok else f"{job_id} had already started or finished"
        raise Refused(404, f"no action {name!r}")

    # -- errors ----------------------------------------------------------------------------

    def error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith(("/api/", "/events/", "/actions/", "/metrics")):
            return JSONResponse({"error": message}, status)
        return render("error.html", request, {"message": message}, status)

    async def on_fifoflow_error(request: Request, exc: Exception) -> Response:
        return await run_in_threadpool(error, request, status_of(exc), str(exc))

    async def on_server_error(request: Request, exc: Exception) -> Response:
        log.warning("dashboard: server error on %s: %s", request.url.path, exc)
        return JSONResponse({"error": f"server error: {exc}"}, 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler.start()
        try:
            yield
        finally:
            sampler.stop()

    push_jobs = make_endpoint(broker, cfg.allow_push, cfg.token, cfg.push_limit)

    routes = [
        Route("/", overview_page),
        Route("/timeline", timeline_page),
        Route("/jobs", jobs_page),
        Route("/jobs/{queue}/{id}", job_page),
        Route("/dead", dead_page),
        Route("/api/overview", api_overview),
        Route("/api/status", api_overview),
        Route("/api/timeline", api_timeline),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs", push_jobs, methods=["POST"]),
        Route("/api/jobs/{queue}/{id}", api_job),
        Route("/api/dead", api_dead),
        Route("/events/overview", events_overview),
        Route("/events/timeline", events_timeline),
        Route("/actions/{name}", action, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(packages=[("fifoflow.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            FifoflowError: on_fifoflow_error,
            ValueError: on_fifoflow_error,
            redis.RedisError: on_server_error,
        },
    )
    app.state.sampler = sampler
    app.state.closing = closing
    app.state.config = cfg
    app.add_middleware(SecurityHeaders)
    return app
