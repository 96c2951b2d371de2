"""Request telemetry: correlation ids, one log line and one counter per API request, `GET /metrics`.

An incoming `X-Correlation-ID` (or a new one) is bound to every log line the
request causes on this node, answered back in the response header, and carried
by the commands that create fires (trigger, replay, backfill) into their
webhooks' `X-Correlation-ID`.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schedb.api.context import NODE
from schedb.api.problems import Handler

CORRELATION_ID = "schedb.correlation_id"  # key in the aiohttp request mapping
_CORRELATION_ID_FORM = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = structlog.get_logger("schedb.api")


@web.middleware
async def telemetry(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: it sees the final status, problem answers included."""
    given = request.headers.get("X-Correlation-ID", "")
    correlation_id = given if _CORRELATION_ID_FORM.match(given) else uuid.uuid4().hex
    request[CORRELATION_ID] = correlation_id
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[NODE].metrics.api_requests.labels(route, request.method, str(response.status)).inc()
        if route not in ("/metrics", "/health", "/ready"):
            log.info("api_request", method=request.method, route=route, path=request.path,
                     status=response.status, duration_ms=round((time.perf_counter() - started) * 1000, 2))
    response.headers["X-Correlation-ID"] = correlation_id
    return response


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
