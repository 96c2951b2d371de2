"""The HTTP API of a node: `create_app(node)` builds it from the route table below."""

from __future__ import annotations

import asyncio

from aiohttp import web

from schedb.api import bulk, cluster, controls, jobs, membership, openapi
from schedb.api.context import NODE
from schedb.api.problems import Handler, problem_middleware
from schedb.api.telemetry import get_metrics, telemetry
from schedb.node import Node

ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/api/v1/jobs", jobs.create_job),
    ("GET", "/api/v1/jobs", jobs.list_jobs),
    ("POST", "/api/v1/jobs/bulk", bulk.create_jobs),
    ("GET", "/api/v1/jobs/{job_id}", jobs.get_job),
    ("PUT", "/api/v1/jobs/{job_id}", jobs.put_job),
    ("PATCH", "/api/v1/jobs/{job_id}", jobs.patch_job),
    ("DELETE", "/api/v1/jobs/{job_id}", jobs.delete_job),
    ("GET", "/api/v1/jobs/{job_id}/executions", jobs.job_executions),
    ("POST", "/api/v1/jobs/{job_id}/trigger", controls.trigger_job),
    ("POST", "/api/v1/jobs/{job_id}/pause", controls.pause_job),
    ("POST", "/api/v1/jobs/{job_id}/resume", controls.resume_job),
    ("POST", "/api/v1/jobs/{job_id}/backfill", controls.backfill_job),
    ("GET", "/api/v1/executions", jobs.list_executions),
    ("GET", "/api/v1/dlq", controls.list_dead_letters),
    ("POST", "/api/v1/dlq/{fire_id}/replay", controls.replay_dead_letter),
    ("DELETE", "/api/v1/dlq/{fire_id}", controls.drop_dead_letter),
    ("GET", "/api/v1/cluster", cluster.get_cluster),
    ("POST", "/api/v1/cluster/members", membership.add_member),
    ("DELETE", "/api/v1/cluster/members/{member}", membership.remove_member),
    ("POST", "/api/v1/cluster/leave", membership.leave),
    ("GET", "/health", cluster.health),
    ("GET", "/ready", cluster.ready),
    ("GET", "/metrics", get_metrics),
    ("GET", "/api/v1/openapi.json", openapi.get_openapi),
]


def create_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.http.body_max_bytes,
                          middlewares=[telemetry, problem_middleware])
    app[NODE] = node
    app[membership.CHANGE_LOCK] = asyncio.Lock()
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
