"""Service-registered jobs: `POST /api/v1/registrations` (a service declares its jobs; see
registry.py for what is kept and what is updated) and `GET /api/v1/registrations?service=`."""

from __future__ import annotations

from aiohttp import web

from schedb.api.auth import acting_team, current_actor
from schedb.api.context import NODE, json_response, propose
from schedb.api.problems import Problem, read_json
from schedb.api.targets import check_webhook
from schedb.api.views import job_view
from schedb.clock import wall_ms
from schedb.commands import RegisterJobs
from schedb.fsm import queries
from schedb.fsm.registry import JOBS_PER_SERVICE_MAX


async def register(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"service", "jobs"} or not isinstance(body.get("jobs"), list) \
            or len(body["jobs"]) > JOBS_PER_SERVICE_MAX:
        message = f'send {{"service": …, "jobs": [...]}} with at most {JOBS_PER_SERVICE_MAX} jobs'
        raise Problem(422, "Invalid registration", message, kind="invalid", errors=[{"field": "", "message": message}])
    team = acting_team(request)
    for i, entry in enumerate(body["jobs"]):
        url = entry.get("callback_url") if isinstance(entry, dict) else None
        if isinstance(url, str):
            try:
                await check_webhook(node, {"webhook": {"url": url}}, team)
            except Problem as problem:
                raise Problem(422, "Invalid registration", problem.detail, kind="invalid",
                              errors=[{"field": f"jobs[{i}].callback_url", "message": problem.detail}]) from problem
    result = await propose(node, RegisterJobs(wall_ms(), body.get("service"), body["jobs"], team))
    return json_response({"service": body["service"], "orphaned": result["orphaned"],
                          "jobs": [{"id": r["job_id"], "registered": r["error"] is None,
                                    **({"detail": r["detail"]} if r["error"] else {})} for r in result["results"]]})


async def list_registered(request: web.Request) -> web.Response:
    service = request.query.get("service")
    actor = current_actor.get()
    now_ms = wall_ms()
    jobs = request.app[NODE].replica.read(queries.registered_jobs, actor, service)
    return json_response({"jobs": [job_view(job, now_ms) for job in jobs]})
