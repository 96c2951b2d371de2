"""The HTTP API of a node: `create_app(node)` builds it from the route table below.

Each route names what the caller needs (auth.py): PUBLIC, READ (any role),
WRITE (operator or admin, own team) or ADMIN."""

from __future__ import annotations

import asyncio

from aiohttp import web

from schedb.api import (
    bulk,
    cluster,
    console,
    controls,
    cors,
    eventstream,
    joblist,
    jobs,
    keys,
    membership,
    openapi,
    registrations,
    runs,
    schedules,
    secrets,
    stats,
    teams,
)
from schedb.api.auth import ADMIN, PUBLIC, READ, WRITE, auth_middleware
from schedb.api.context import NODE
from schedb.api.problems import Handler, Problem, problem_middleware
from schedb.api.telemetry import get_metrics, telemetry
from schedb.node import Node

ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/api/v1/jobs", jobs.create_job, WRITE),
    ("GET", "/api/v1/jobs", joblist.list_jobs, READ),
    ("POST", "/api/v1/jobs/bulk", bulk.create_jobs, WRITE),
    ("GET", "/api/v1/jobs/{job_id}", jobs.get_job, READ),
    ("PUT", "/api/v1/jobs/{job_id}", jobs.put_job, WRITE),
    ("PATCH", "/api/v1/jobs/{job_id}", jobs.patch_job, WRITE),
    ("DELETE", "/api/v1/jobs/{job_id}", jobs.delete_job, WRITE),
    ("GET", "/api/v1/jobs/{job_id}/executions", jobs.job_executions, READ),
    ("GET", "/api/v1/jobs/{job_id}/stats", stats.job_stats, READ),
    ("POST", "/api/v1/jobs/{job_id}/trigger", controls.trigger_job, WRITE),
    ("POST", "/api/v1/jobs/{job_id}/pause", controls.pause_job, WRITE),
    ("POST", "/api/v1/jobs/{job_id}/resume", controls.resume_job, WRITE),
    ("POST", "/api/v1/jobs/{job_id}/backfill", controls.backfill_job, WRITE),
    ("GET", "/api/v1/executions", jobs.list_executions, READ),
    ("POST", "/api/v1/schedules/preview", schedules.preview, READ),
    ("GET", "/api/v1/runs", runs.list_runs, READ),
    ("POST", "/api/v1/registrations", registrations.register, WRITE),
    ("GET", "/api/v1/registrations", registrations.list_registered, READ),
    ("GET", "/api/v1/runs/{run_id}", runs.get_run, READ),
    ("GET", "/api/v1/dlq", controls.list_dead_letters, READ),
    ("POST", "/api/v1/dlq/{fire_id}/replay", controls.replay_dead_letter, WRITE),
    ("DELETE", "/api/v1/dlq/{fire_id}", controls.drop_dead_letter, WRITE),
    ("POST", "/api/v1/secrets", secrets.put_secret, WRITE),
    ("GET", "/api/v1/secrets", secrets.list_secrets, READ),
    ("DELETE", "/api/v1/secrets/{name}", secrets.delete_secret, WRITE),
    ("GET", "/api/v1/teams/{team}/usage", teams.get_usage, READ),
    ("GET", "/api/v1/teams/{team}/quotas", teams.get_quotas, READ),
    ("PUT", "/api/v1/teams/{team}/quotas", teams.put_quotas, ADMIN),
    ("POST", "/api/v1/keys", keys.create_key, ADMIN),
    ("GET", "/api/v1/keys", keys.list_keys, ADMIN),
    ("DELETE", "/api/v1/keys/{key_id}", keys.revoke_key, ADMIN),
    ("GET", "/api/v1/whoami", keys.whoami, READ),
    ("GET", "/api/v1/audit", teams.get_audit, ADMIN),
    ("GET", "/api/v1/cluster", cluster.get_cluster, READ),
    ("GET", "/api/v1/events", eventstream.stream_events, READ),
    ("POST", "/api/v1/cluster/members", membership.add_member, ADMIN),
    ("DELETE", "/api/v1/cluster/members/{member}", membership.remove_member, ADMIN),
    ("POST", "/api/v1/cluster/leave", membership.leave, ADMIN),
    ("GET", "/health", cluster.health, PUBLIC),
    ("GET", "/ready", cluster.ready, PUBLIC),
    # Admin: the per-team series name every team and its usage (scrape with an admin key).
    ("GET", "/metrics", get_metrics, ADMIN),
    ("GET", "/api/v1/openapi.json", openapi.get_openapi, PUBLIC),
]


def _header_limit(headers_max: int) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def limit_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.headers) > headers_max:
            raise Problem(413, "Too many headers", f"at most {headers_max} header fields per request",
                          kind="too-many-headers", errors=[{"field": "headers", "message": f"at most {headers_max}"}])
        return await handler(request)

    return limit_headers


def create_app(node: Node) -> web.Application:
    permissions = {(method, path): needed for method, path, _, needed in ROUTES}
    app = web.Application(client_max_size=node.config.http.body_max_bytes,
                          # CORS outermost: a preflight is answered before routing errors and auth matter
                          middlewares=[cors.middleware(node), telemetry, problem_middleware,
                                       _header_limit(node.config.http.headers_max), auth_middleware(node, permissions),
                                       # after auth: a call without its key is told so (401) first
                                       cors.require_json_or_client_header])
    app[NODE] = node
    app.on_response_prepare.append(cors.add_headers)  # also for a stream, whose headers leave before it ends
    permissions.update(console.install(app))
    eventstream.install(app, node)
    app[membership.CHANGE_LOCK] = asyncio.Lock()
    for method, path, handler, _ in ROUTES:
        app.router.add_route(method, path, handler)
    return app
