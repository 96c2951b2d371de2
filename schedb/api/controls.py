"""Operator controls: trigger now, pause, resume; and the dead-letter queue."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.context import NODE, json_response, propose, query_int
from schedb.api.jobs import LIST_LIMIT_MAX, patch_fields
from schedb.api.problems import Problem, read_json
from schedb.api.telemetry import CORRELATION_ID
from schedb.api.views import time_or_none
from schedb.clock import wall_ms
from schedb.commands import BackfillJob, DropDeadLetter, ReplayDeadLetter, TriggerJob
from schedb.fsm import queries
from schedb.timefmt import rfc3339_to_ms

log = structlog.get_logger("schedb.api")


async def trigger_job(request: web.Request) -> web.Response:
    """Run now; optional body {"params": {...}, "force": bool}. 409 while a run of the job is
    in progress (a fire due or running, or a workflow run it started), unless forced."""
    node = request.app[NODE]
    job_id = request.match_info["job_id"]
    params, force = await _trigger_options(request)
    result = await propose(node, TriggerJob(wall_ms(), job_id, request[CORRELATION_ID], params, force))
    log.info("fire_triggered", job_id=job_id, fire_id=result["fire_id"], forced=force)
    return json_response({"job_id": job_id, "fire_id": result["fire_id"]}, 202)


async def _trigger_options(request: web.Request) -> tuple[dict[str, Any], bool]:
    if not request.can_read_body:
        return {}, False
    body = await read_json(request)
    errors = [{"field": k, "message": "unknown field; known: params, force"} for k in
              (body if isinstance(body, dict) else {}) if k not in ("params", "force")]
    if not isinstance(body, dict):
        errors.append({"field": "", "message": "must be an object"})
    elif not isinstance(body.get("params", {}), dict):
        errors.append({"field": "params", "message": "must be an object"})
    elif not isinstance(body.get("force", False), bool):
        errors.append({"field": "force", "message": "must be true or false"})
    if errors:
        raise Problem(422, "Invalid trigger", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      kind="invalid", errors=errors)
    return body.get("params", {}), body.get("force", False)


async def backfill_job(request: web.Request) -> web.Response:
    """Fire the job's occurrences between start and end (RFC 3339, inclusive, not in the future)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise Problem(422, "Invalid backfill", "send {\"start\": …, \"end\": …}", kind="invalid",
                      errors=[{"field": "", "message": "must be an object"}])
    errors = [{"field": k, "message": "unknown field"} for k in body if k not in ("start", "end")]
    times: dict[str, int] = {}
    for field in ("start", "end"):
        try:
            times[field] = rfc3339_to_ms(body[field]) if isinstance(body.get(field), str) else -1
        except ValueError:
            times[field] = -1
        if times[field] < 0:
            errors.append({"field": field, "message": "required, an RFC 3339 time with an offset"})
    if not errors and times["end"] > wall_ms():
        errors.append({"field": "end", "message": "must not be in the future"})
    if errors:
        raise Problem(422, "Invalid backfill", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      kind="invalid", errors=errors)
    job_id = request.match_info["job_id"]
    result = await propose(request.app[NODE], BackfillJob(wall_ms(), job_id, times["start"], times["end"],
                                                          request[CORRELATION_ID]))
    return json_response({"job_id": job_id, "fires": result["fires"], "fire_ids": result["fire_ids"],
                          "already_active": result["already_active"]}, 202)


async def pause_job(request: web.Request) -> web.Response:
    return await patch_fields(request, {"paused": True})


async def resume_job(request: web.Request) -> web.Response:
    return await patch_fields(request, {"paused": False})


def dead_letter_view(letter: dict[str, Any]) -> dict[str, Any]:
    return {"fire_id": letter["fire_id"], "job_id": letter["job_id"],
            "scheduled_at": time_or_none(letter["scheduled_ms"]), "attempts": letter["attempts"],
            "last_status": letter["last_status"], "last_http_status": letter["last_http_status"] or None,
            "last_error": letter["last_error"] or None, "dead_at": time_or_none(letter["dead_ms"])}


async def list_dead_letters(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, LIST_LIMIT_MAX)
    job_id = request.query.get("job_id")
    letters, total = request.app[NODE].replica.read(queries.dead_letters, current_actor.get(), job_id, limit)
    return json_response({"dead_letters": [dead_letter_view(letter) for letter in letters], "total": total})


async def replay_dead_letter(request: web.Request) -> web.Response:
    fire_id = request.match_info["fire_id"]
    await propose(request.app[NODE], ReplayDeadLetter(wall_ms(), fire_id, request[CORRELATION_ID]))
    log.info("dead_letter_replayed", fire_id=fire_id)
    return json_response({"fire_id": fire_id, "replayed": True}, 202)


async def drop_dead_letter(request: web.Request) -> web.Response:
    await propose(request.app[NODE], DropDeadLetter(wall_ms(), request.match_info["fire_id"]))
    return web.Response(status=204)

