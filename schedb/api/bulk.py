"""Bulk create: up to 1,000 jobs in one request and one Raft log entry, for loading many
jobs quickly. Every job is validated before anything is proposed (one invalid job and
nothing is created, the errors name `jobs[i].field`); an id that exists already or a full
slot fails that job alone, reported per item."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from schedb.api.auth import acting_team
from schedb.api.context import NODE, json_response, propose
from schedb.api.jobs import refuse_past_one_shot, validate_spec
from schedb.api.problems import Problem, read_json
from schedb.api.targets import check_webhook
from schedb.clock import wall_ms
from schedb.commands import CreateJobs
from schedb.node import Node

BULK_MAX = 1_000
ERRORS_SHOWN_MAX = 100
_ITEM_STATUS = {None: 201, "conflict": 409, "slot_full": 429, "invalid": 422, "quota": 429, "forbidden": 403}


async def create_jobs(request: web.Request) -> web.Response:
    node = request.app[NODE]
    raw = await read_json(request)
    items = raw.get("jobs") if isinstance(raw, dict) and set(raw) == {"jobs"} else None
    if not isinstance(items, list) or not 1 <= len(items) <= BULK_MAX:
        message = f"the body must be {{\"jobs\": [...]}} with 1 to {BULK_MAX} jobs"
        raise Problem(422, "Invalid jobs", message, kind="invalid", errors=[{"field": "jobs", "message": message}])
    specs, raws, errors = _validate_all(node, items)
    team = acting_team(request)
    found: dict[str, list[dict[str, str]]] = {}  # a webhook's problems: most bulk loads share a few targets
    for i, spec in enumerate(specs):
        key = repr(spec["webhook"])
        if key not in found:
            found[key] = await _webhook_problems(node, spec, team)
        errors += [{"field": f"jobs[{i}].{e['field']}", "message": e["message"]} for e in found[key]]
    if errors:
        raise Problem(422, "Invalid jobs", f"{len(errors)} problem(s) in the jobs; nothing was created",
                      kind="invalid", errors=errors[:ERRORS_SHOWN_MAX])
    # The log carries the jobs as sent (with their ids), not the normalized specs: apply validates
    # and normalizes them again anyway, and the entry stays small (about 72 KB for 1,000 jobs;
    # normalized, it was several times that, and the bench's load rate halved).
    result = await propose(node, CreateJobs(wall_ms(), raws, team))
    outcomes = [{"id": r["job_id"], "status": _ITEM_STATUS.get(r["error"], 422),
                 **({"detail": r["detail"]} if r["error"] else {})} for r in result["results"]]
    created = sum(1 for o in outcomes if o["status"] == 201)
    return json_response({"created": created, "failed": len(outcomes) - created, "items": outcomes})


async def _webhook_problems(node: Node, spec: dict[str, Any], team: str) -> list[dict[str, str]]:
    """What check_webhook finds wrong with the job's webhook (it depends on the webhook and the team only)."""
    try:
        await check_webhook(node, spec, team)
    except Problem as problem:
        return list(problem.errors or [])
    return []


def _validate_all(node: Node, items: list[Any]) -> tuple[list[dict[str, Any]], list[Any], list[dict[str, str]]]:
    """The normalized specs (for the checks here), the jobs as sent with their ids (for the log), errors."""
    specs: list[dict[str, Any]] = []
    raws: list[Any] = []
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if isinstance(item, dict) and "id" not in item:
            item = {**item, "id": uuid.uuid4().hex}
        try:
            spec = validate_spec(node, item)
            refuse_past_one_shot(spec)
        except Problem as problem:
            errors += [{"field": f"jobs[{i}].{e['field']}".rstrip("."), "message": e["message"]}
                       for e in problem.errors or [{"field": "", "message": problem.detail}]]
            continue
        if spec["id"] in seen:
            errors.append({"field": f"jobs[{i}].id", "message": f"{spec['id']!r} appears twice in this request"})
        seen.add(spec["id"])
        specs.append(spec)
        raws.append(item)
    return specs, raws, errors
