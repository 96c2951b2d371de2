"""The HTTP API of a node: `create_app(node)` builds it; routes are listed here."""

from __future__ import annotations

from aiohttp import web

from schedb.api import cluster, controls, jobs
from schedb.api.context import NODE
from schedb.api.problems import problem_middleware
from schedb.api.telemetry import get_metrics, telemetry
from schedb.node import Node


def create_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.http.body_max_bytes,
                          middlewares=[telemetry, problem_middleware])
    app[NODE] = node
    app.router.add_post("/api/v1/jobs", jobs.create_job)
    app.router.add_get("/api/v1/jobs", jobs.list_jobs)
    app.router.add_get("/api/v1/jobs/{job_id}", jobs.get_job)
    app.router.add_put("/api/v1/jobs/{job_id}", jobs.put_job)
    app.router.add_patch("/api/v1/jobs/{job_id}", jobs.patch_job)
    app.router.add_delete("/api/v1/jobs/{job_id}", jobs.delete_job)
    app.router.add_get("/api/v1/jobs/{job_id}/executions", jobs.job_executions)
    app.router.add_post("/api/v1/jobs/{job_id}/trigger", controls.trigger_job)
    app.router.add_post("/api/v1/jobs/{job_id}/pause", controls.pause_job)
    app.router.add_post("/api/v1/jobs/{job_id}/resume", controls.resume_job)
    app.router.add_post("/api/v1/jobs/{job_id}/backfill", controls.backfill_job)
    app.router.add_get("/api/v1/dlq", controls.list_dead_letters)
    app.router.add_post("/api/v1/dlq/{fire_id}/replay", controls.replay_dead_letter)
    app.router.add_delete("/api/v1/dlq/{fire_id}", controls.drop_dead_letter)
    app.router.add_get("/api/v1/executions", jobs.list_executions)
    app.router.add_get("/api/v1/cluster", cluster.get_cluster)
    app.router.add_get("/health", cluster.health)
    app.router.add_get("/ready", cluster.ready)
    app.router.add_get("/metrics", get_metrics)
    return app
