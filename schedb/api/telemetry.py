"""`GET /metrics`, and the middleware that counts API requests by route and status."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schedb.api.context import NODE
from schedb.api.problems import Handler


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: it sees the final status, problem answers included."""
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[NODE].metrics.api_requests.labels(route, request.method, str(response.status)).inc()
    return response


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
