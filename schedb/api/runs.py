"""Workflow runs: `GET /api/v1/runs/{run_id}` (each step's state), `GET /api/v1/runs?job_id=` (recent)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.context import NODE, json_response, query_int
from schedb.api.problems import Problem
from schedb.api.views import time_or_none
from schedb.fsm import tenancy, workflow
from schedb.fsm.core import State

RUNS_LIMIT_MAX = 1_000


def _view(run: dict[str, Any]) -> dict[str, Any]:
    raw = workflow.run_view(run)
    return {"run_id": raw["run_id"], "root": raw["root"], "team": raw["team"],
            "started_at": time_or_none(raw["started_ms"]), "finished_at": time_or_none(raw["finished_ms"]),
            "steps": raw["steps"]}


def _visible(run: dict[str, Any]) -> bool:
    actor = current_actor.get()
    return tenancy.is_admin(actor) or run["team"] == actor.get("team")


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    run = request.app[NODE].replica.read(lambda s: _view(s.runs[run_id]) if run_id in s.runs else None)
    if run is None or not _visible(run):
        raise Problem(404, "Not found", f"no run {run_id!r} (runs are kept for the last few thousand)",
                      kind="not-found")
    return json_response(run)


async def list_runs(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, RUNS_LIMIT_MAX)
    job_id = request.query.get("job_id")

    def pick(state: State) -> list[dict[str, Any]]:
        out = []
        for run in reversed(state.runs.values()):
            if (job_id is None or job_id in run["steps"]) and _visible(run):
                out.append(_view(run))
                if len(out) >= limit:
                    break
        return out

    return json_response({"runs": request.app[NODE].replica.read(pick)})
