"""Workflow runs: `GET /api/v1/runs/{run_id}` (each step's state), `GET /api/v1/runs?job_id=` (recent)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.context import NODE, json_response, query_int
from schedb.api.problems import Problem
from schedb.api.views import time_or_none
from schedb.fsm import queries

RUNS_LIMIT_MAX = 1_000


def _view(raw: dict[str, Any]) -> dict[str, Any]:
    """A run as users see it, from its view (schedb.fsm.workflow.run_view)."""
    return {"run_id": raw["run_id"], "root": raw["root"], "team": raw["team"],
            "started_at": time_or_none(raw["started_ms"]), "finished_at": time_or_none(raw["finished_ms"]),
            "steps": raw["steps"]}


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    run = request.app[NODE].replica.read(queries.run, run_id, current_actor.get())
    if run is None:
        raise Problem(404, "Not found", f"no run {run_id!r} (runs are kept for the last few thousand)",
                      kind="not-found")
    return json_response(_view(run))


async def list_runs(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, RUNS_LIMIT_MAX)
    job_id = request.query.get("job_id")
    runs = request.app[NODE].replica.read(queries.runs, current_actor.get(), job_id, limit)
    return json_response({"runs": [_view(run) for run in runs]})
