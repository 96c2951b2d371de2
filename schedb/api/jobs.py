"""Job and execution handlers: parse → validate → command → await commit → JSON."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web

from schedb.api.auth import acting_team, current_actor, sees
from schedb.api.context import NODE, json_response, propose, query_choice, query_flag, query_int
from schedb.api.problems import Problem, read_json
from schedb.api.schedules import instants
from schedb.api.targets import check_webhook
from schedb.api.views import SECRET_MASK, etag, execution_view, job_view
from schedb.clock import wall_ms
from schedb.commands import CreateJob, DeleteJob, ReplaceJob
from schedb.describe import describe
from schedb.fsm import queries
from schedb.fsm.jobs import IDEMPOTENCY_KEY_LEN_MAX
from schedb.jobspec import InvalidJob, validate_job
from schedb.node import Node
from schedb.schedule import parse_schedule
from schedb.timefmt import ms_to_rfc3339

LIST_LIMIT_MAX = 1000
PATCH_RETRIES = 3
PREVIEW_COUNT = 5
ETAG_DIGITS_MAX = 18  # a version; more digits (or non-ASCII ones) are no ETag of ours
STATUSES = ("succeeded", "failed", "timed_out", "skipped", "missed", "unknown", "throttled", "upstream_failed")


def validate_spec(node: Node, raw: Any, job_id: str | None = None) -> dict[str, Any]:
    try:
        spec = validate_job(raw, job_id)
    except InvalidJob as exc:
        raise Problem(422, "Invalid job", str(exc), kind="invalid", errors=exc.errors) from exc
    timeout_max = node.config.executor.timeout_s_max
    if spec["webhook"]["timeout_s"] > timeout_max:
        message = f"must be at most {timeout_max:g} s on this cluster"
        raise Problem(422, "Invalid job", f"webhook.timeout_s: {message}", kind="invalid",
                      errors=[{"field": "webhook.timeout_s", "message": message}])
    return spec


def _keep_secret(raw: Any, stored: dict[str, Any]) -> Any:
    """A definition read back from the API carries the masked secret: keep the stored one."""
    webhook = raw.get("webhook") if isinstance(raw, dict) else None
    if isinstance(webhook, dict) and webhook.get("signing_secret") == SECRET_MASK:
        return {**raw, "webhook": {**webhook, "signing_secret": stored["webhook"].get("signing_secret")}}
    return raw


READ_ONLY_FIELDS = ("next_fire_at", "created_at", "updated_at", "version", "registration", "schedule_preview")


def _without_read_only(raw: Any, job: dict[str, Any]) -> Any:
    """A definition read back from the API and sent again: drop what the server sets; the team
    of a job cannot change."""
    if not isinstance(raw, dict):
        return raw
    if "team" in raw and raw["team"] != job["team"]:
        raise Problem(422, "Invalid job", "team: a job cannot move to another team", kind="invalid",
                      errors=[{"field": "team", "message": "cannot be changed"}])
    return {k: v for k, v in raw.items() if k not in READ_ONLY_FIELDS and k != "team"}


def refuse_past_one_shot(spec: dict[str, Any]) -> None:
    """A new job whose @at time has passed would never fire: say so instead of storing it."""
    schedule = spec["schedule"]  # None: the job runs after its upstreams only
    if schedule is not None and parse_schedule(schedule, spec["timezone"]).next_after(wall_ms()) is None:
        raise Problem(422, "Invalid job", "schedule: the @at time is in the past", kind="invalid",
                      errors=[{"field": "schedule", "message": "the @at time is in the past"}])


def _read_job(node: Node, job_id: str) -> dict[str, Any]:
    job = node.replica.read(queries.job, job_id)
    if job is None or not sees(job):  # another team's job does not exist for this key
        raise Problem(404, "Not found", f"job {job_id!r} does not exist", kind="not-found")
    return job


async def _job_response(node: Node, job_id: str, status: int = 200, preview: bool = True) -> web.Response:
    """The job; after a change (PUT, PATCH), or when a GET asks, with its schedule previewed."""
    job = _read_job(node, job_id)
    headers = {"ETag": etag(job["version"])}
    if status == 201:
        headers["Location"] = f"/api/v1/jobs/{job_id}"
    now_ms = wall_ms()
    shown = None
    if preview and _slow_to_preview(job["spec"]["schedule"]):
        shown = await asyncio.get_running_loop().run_in_executor(None, _preview, job["spec"], now_ms)
    elif preview:
        shown = _preview(job["spec"], now_ms)
    return json_response({**job_view(job, now_ms), "schedule_preview": shown}, status, headers)


def _slow_to_preview(schedule: str | None) -> bool:
    """Six-field (per-second) cron can take croniter hundreds of ms around a DST gap: off the loop.
    The rest takes well under a millisecond for five fires."""
    return schedule is not None and not schedule.startswith("@") and len(schedule.split()) == 6


def _preview(spec: dict[str, Any], now_ms: int) -> dict[str, Any] | None:
    """For an operator checking a schedule (an override, say): it in words and its next fires."""
    if spec["schedule"] is None:
        return None
    schedule = parse_schedule(spec["schedule"], spec["timezone"])
    upcoming = [ms for ms, _ in instants(schedule, now_ms, PREVIEW_COUNT)]
    return {"description": describe(spec["schedule"]), "next": [ms_to_rfc3339(ms) for ms in upcoming]}


def _if_match(request: web.Request) -> int:
    """The version an If-Match header asks for; 0 when absent or '*'."""
    text = request.headers.get("If-Match", "").strip()
    if not text or text == "*":
        return 0
    text = text.removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > ETAG_DIGITS_MAX or int(text) == 0:
        raise Problem(400, "Invalid If-Match", "If-Match must be an ETag this API returned",
                      kind="invalid-if-match", errors=[{"field": "If-Match", "message": "unknown ETag"}])
    return int(text)


async def create_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    raw = await read_json(request)
    if isinstance(raw, dict) and "id" not in raw:
        raw = {**raw, "id": uuid.uuid4().hex}
    spec = validate_spec(node, raw)
    refuse_past_one_shot(spec)
    team = acting_team(request)
    await check_webhook(node, spec, team)
    key = request.headers.get("Idempotency-Key", "")
    if len(key) > IDEMPOTENCY_KEY_LEN_MAX or not key.isprintable():  # a header not in UTF-8 is not either
        raise Problem(400, "Invalid Idempotency-Key", f"at most {IDEMPOTENCY_KEY_LEN_MAX} printable characters",
                      kind="invalid-idempotency-key",
                      errors=[{"field": "Idempotency-Key", "message": "too long or not printable"}])
    result = await propose(node, CreateJob(wall_ms(), spec, key, team))
    # A repeated key answers with the job the first request created (200, not a second 201).
    return await _job_response(node, result["job_id"], 200 if result.get("replayed") else 201, preview=False)


async def get_job(request: web.Request) -> web.Response:
    """?preview=true adds schedule_preview (a few hundred µs of croniter for some schedules)."""
    preview = bool(query_flag(request, "preview"))
    return await _job_response(request.app[NODE], request.match_info["job_id"], preview=preview)


async def put_job(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = request.match_info["job_id"]
    raw = await read_json(request)
    if isinstance(raw, dict) and "id" not in raw:
        raw = {**raw, "id": job_id}
    job = _read_job(node, job_id)
    spec = validate_spec(node, _keep_secret(_without_read_only(raw, job), job["spec"]), job_id)
    await check_webhook(node, spec, job["team"])
    await propose(node, ReplaceJob(wall_ms(), spec, _if_match(request)))
    return await _job_response(node, job_id)


async def patch_job(request: web.Request) -> web.Response:
    """JSON merge patch (RFC 7396) of the job definition."""
    patch = await read_json(request)
    if not isinstance(patch, dict):
        raise Problem(422, "Invalid patch", "a merge patch must be a JSON object", kind="invalid",
                      errors=[{"field": "", "message": "must be an object"}])
    return await patch_fields(request, patch)


async def patch_fields(request: web.Request, patch: dict[str, Any]) -> web.Response:
    """Apply a merge patch to the job named in the URL, retrying on a concurrent update
    unless the client pinned a version with If-Match."""
    node = request.app[NODE]
    job_id = request.match_info["job_id"]
    wanted = _if_match(request)
    for _ in range(PATCH_RETRIES):
        job = _read_job(node, job_id)
        if wanted and wanted != job["version"]:
            raise Problem(412, "Precondition failed", f"job is at version {job['version']}",
                          kind="precondition-failed")
        merged = merge_patch(job["spec"], _without_read_only(patch, job))
        spec = validate_spec(node, _keep_secret(merged, job["spec"]), job_id)
        if spec["webhook"] != job["spec"]["webhook"]:
            await check_webhook(node, spec, job["team"])
        try:
            await propose(node, ReplaceJob(wall_ms(), spec, job["version"]))
            return await _job_response(node, job_id)
        except Problem as problem:
            if problem.status != 412 or wanted:
                raise
    raise Problem(409, "Conflict", "the job kept changing under the patch; try again", kind="conflict")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


async def delete_job(request: web.Request) -> web.Response:
    """?force=true deletes a job others depend on (409 without); they lose the dependency."""
    node = request.app[NODE]
    force = bool(query_flag(request, "force"))
    await propose(node, DeleteJob(wall_ms(), request.match_info["job_id"], _if_match(request), force))
    return web.Response(status=204)


def _status_filter(request: web.Request) -> str | None:
    return query_choice(request, "status", STATUSES)


async def job_executions(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = request.match_info["job_id"]
    limit = query_int(request, "limit", 100, 1, LIST_LIMIT_MAX)
    status = _status_filter(request)
    found = node.replica.read(queries.job_history, job_id, current_actor.get())
    if found is None:
        raise Problem(404, "Not found", f"job {job_id!r} does not exist", kind="not-found")
    rows = found[0]
    picked = [execution_view(r) for r in reversed(rows) if status is None or r["status"] == status]
    return json_response({"executions": picked[:limit]})


async def list_executions(request: web.Request) -> web.Response:
    node = request.app[NODE]
    limit = query_int(request, "limit", 100, 1, LIST_LIMIT_MAX)
    status = _status_filter(request)
    job_id = request.query.get("job_id")
    rows = node.replica.read(queries.recent_executions, current_actor.get(), status, job_id, limit)
    return json_response({"executions": [execution_view(row) for row in rows]})
