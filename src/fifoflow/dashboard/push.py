"""``POST /api/jobs``: jobs pushed from any language, over HTTP with a JSON body.

Off unless the dashboard runs with ``--allow-push``; then only with the dashboard's token
(``X-Fifoflow-Token: TOKEN`` or ``Authorization: Bearer TOKEN``), checked before the body
is read, so a request without it changes nothing. A browser cannot send either header to
another origin without a CORS preflight, which the dashboard never grants.

The body: ``{"target": "pkg.mod:fn", "params": {...}}`` for one job, or ``"params_list":
[{...}, ...]`` for many (all or none), with any of push's options (``queue``, ``priority``,
``pool``, ``key``, ``delay``, ``retries``, ``timeout``, ``max_lost``, ``depends_on``,
``result_ttl``, ``job_id``). Everything is checked as ``fifoflow push`` checks it.
Answers: 201 ``{"queue", "ids"}``; 400 ``{"error"}`` (one line: what is wrong); 401 without
the right token; 403 when pushing is off; 413 for a body over the limit; 429 when the
queue is full (nothing was added).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..broker import Broker
from ..errors import FifoflowError, QueueFull, UsageError
from ..queue import Queue
from .security import TOKEN_HEADER, same

log = logging.getLogger("fifoflow.dashboard")

#: The options a body may carry besides target and params, as ``Queue.push_many`` names them.
OPTIONS = (
    "priority",
    "pool",
    "key",
    "delay",
    "retries",
    "timeout",
    "max_lost",
    "depends_on",
    "result_ttl",
    "job_id",
)
FIELDS = ("target", "params", "params_list", "queue", *OPTIONS)


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _token(request: Request) -> str:
    header = request.headers.get(TOKEN_HEADER, "")
    if header:
        return header
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def _body(request: Request, limit: int) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Refusal(400, "send the job as JSON (Content-Type: application/json)")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"the body is over {limit} bytes: push fewer jobs at once")
        chunks.append(chunk)
    try:
        doc = json.loads(b"".join(chunks))
    except UnicodeDecodeError:
        raise Refusal(400, "invalid JSON: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise Refusal(400, f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise Refusal(400, "invalid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise Refusal(400, f"expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise Refusal(400, f"unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    if "target" not in doc:
        raise Refusal(400, "target is required: 'package.module:function'")
    if "params" in doc and "params_list" in doc:
        raise Refusal(400, "give params or params_list, not both")
    if "params_list" in doc and not isinstance(doc["params_list"], list):
        raise Refusal(400, "params_list must be a list of JSON objects")
    return doc


def _push(broker: Broker, doc: dict[str, Any]) -> tuple[str, list[str]]:
    q = Queue(doc.get("queue"), broker=broker)
    params = doc["params_list"] if "params_list" in doc else [doc.get("params")]
    options = {k: doc[k] for k in OPTIONS if k in doc}
    jobs = q.push_many(doc["target"], params, **options)
    return q.name, [j.id for j in jobs]


def make_endpoint(broker: Broker, allowed: bool, token: str | None, limit: int) -> Any:
    """The endpoint for ``POST /api/jobs``; ``limit``: the largest body, in bytes."""

    async def push_jobs(request: Request) -> Response:
        try:
            if not allowed or not token:
                raise Refusal(403, "pushing is off: start the dashboard with --allow-push")
            given = _token(request)
            if not given:
                raise Refusal(401, f"the dashboard's token is required ({TOKEN_HEADER} header)")
            if not same(given, token):
                raise Refusal(401, "wrong token")
            doc = await _body(request, limit)
            queue, ids = await run_in_threadpool(_push, broker, doc)
        except Refusal as e:
            return JSONResponse({"error": str(e)}, e.status)
        except QueueFull as e:
            return JSONResponse({"error": str(e)}, 429, headers={"retry-after": "1"})
        except (UsageError, TypeError, ValueError) as e:  # bad input, as push refuses it
            message = (str(e).splitlines() or [type(e).__name__])[0]
            return JSONResponse({"error": message}, 400)
        except FifoflowError as e:  # the server: out of memory, unreachable
            return JSONResponse({"error": str(e)}, 503)
        log.info("dashboard: %d job(s) pushed to %s over HTTP", len(ids), queue)
        return JSONResponse({"queue": queue, "ids": ids}, 201)

    return push_jobs
