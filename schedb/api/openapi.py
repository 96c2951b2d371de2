"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the HTTP API.

Written by hand next to the handlers; a test checks that every route the app
serves is described and that the job schema names exactly the fields the
validator accepts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb import __version__
from schedb.jobspec import CONCURRENCY, DELIVERY, METHODS, MISFIRE, PRIORITIES

JSON = "application/json"
PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    return out


def _problems(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request", 404: "no such job, dead letter or member", 409: "conflict",
            412: "If-Match failed",
            413: "body too large", 422: "invalid fields (see errors)", 429: "too many requests (Retry-After)",
            503: "no leader, or outcome unknown (Retry-After)"}
    return {str(c): {"description": text[c], "content": {PROBLEM: {"schema": _ref("Problem")}}} for c in codes}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
FIRE_ID = {"name": "fire_id", "in": "path", "required": True, "schema": {"type": "string"}}
IF_MATCH = {"name": "If-Match", "in": "header", "schema": {"type": "string"}, "description": 'an ETag, e.g. "3"'}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
STATUS = {"name": "status", "in": "query", "schema": {"type": "string"}}
WRITE_PROBLEMS = (400, 404, 409, 412, 413, 422, 429, 503)


def _paths() -> dict[str, Any]:
    job_answer = _answer("the job", _ref("Job"))
    return {
        "/api/v1/jobs": {
            "post": {"summary": "Create a job", "requestBody": _body(_ref("JobInput")),
                     "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                     "responses": {"201": job_answer, "200": _answer("replay of an Idempotency-Key", _ref("Job")),
                                   **_problems(400, 409, 413, 422, 429, 503)}},
            "get": {"summary": "List jobs by id", "parameters": [
                LIMIT, {"name": "after", "in": "query", "schema": {"type": "string"}},
                {"name": "tag", "in": "query", "schema": {"type": "string"}, "description": "key:value"},
                {"name": "paused", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": _answer("a page", {"type": "object", "properties": {
                    "jobs": {"type": "array", "items": _ref("Job")}, "next_after": {"type": ["string", "null"]}}}),
                    **_problems(400)}},
        },
        "/api/v1/jobs/bulk": {"post": {
            "summary": "Create up to 1,000 jobs in one commit; all are validated first, then each succeeds "
                       "or fails (409 exists, 429 slot full) on its own",
            "requestBody": _body({"type": "object", "required": ["jobs"], "additionalProperties": False,
                                  "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 1000,
                                                          "items": _ref("JobInput")}}}),
            "responses": {"200": _answer("per-job outcomes", {"type": "object", "properties": {
                "created": {"type": "integer"}, "failed": {"type": "integer"},
                "items": {"type": "array", "items": {"type": "object"}}}}), **_problems(400, 413, 422, 429, 503)}}},
        "/api/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {"summary": "Read a job", "responses": {"200": job_answer, **_problems(404)}},
            "put": {"summary": "Replace a job", "parameters": [IF_MATCH], "requestBody": _body(_ref("JobInput")),
                    "responses": {"200": job_answer, **_problems(*WRITE_PROBLEMS)}},
            "patch": {"summary": "JSON merge patch (RFC 7396)", "parameters": [IF_MATCH],
                      "requestBody": _body({"type": "object"}), "responses": {"200": job_answer,
                                                                              **_problems(*WRITE_PROBLEMS)}},
            "delete": {"summary": "Delete a job and cancel its pending fires", "parameters": [IF_MATCH],
                       "responses": {"204": _answer("deleted"), **_problems(404, 412, 429, 503)}},
        },
        "/api/v1/jobs/{job_id}/trigger": _post([JOB_ID], "Fire now", 202, {"type": "object"}),
        "/api/v1/jobs/{job_id}/pause": _post([JOB_ID], "Stop scheduling", 200, _ref("Job")),
        "/api/v1/jobs/{job_id}/resume": _post([JOB_ID], "Restart scheduling", 200, _ref("Job")),
        "/api/v1/jobs/{job_id}/backfill": _post([JOB_ID], "Fire the occurrences of a past range", 202,
                                                {"type": "object"}),
        "/api/v1/jobs/{job_id}/executions": {"get": {
            "summary": "The job's executions, newest first", "parameters": [JOB_ID, LIMIT, STATUS],
            "responses": {"200": _answer("executions", _list("executions", "Execution")), **_problems(400, 404)}}},
        "/api/v1/executions": {"get": {
            "summary": "Recent executions cluster-wide, newest first",
            "parameters": [LIMIT, STATUS, {"name": "job_id", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _answer("executions", _list("executions", "Execution")), **_problems(400)}}},
        "/api/v1/dlq": {"get": {"summary": "Dead letters, newest first",
                                "parameters": [LIMIT, {"name": "job_id", "in": "query", "schema": {"type": "string"}}],
                                "responses": {"200": _answer("dead letters", _list("dead_letters", "DeadLetter"))}}},
        "/api/v1/dlq/{fire_id}": {"delete": {"summary": "Drop a dead letter", "parameters": [FIRE_ID],
                                             "responses": {"204": _answer("dropped"), **_problems(404, 503)}}},
        "/api/v1/dlq/{fire_id}/replay": _post([FIRE_ID], "Deliver a dead letter again", 202, {"type": "object"}),
        "/api/v1/cluster": _get("Leader, members, roles, connectivity, log indexes, counters"),
        "/api/v1/cluster/members": {"post": {
            "summary": "Add a running node (raft.join = true) as a member", "requestBody": _body({
                "type": "object", "required": ["raft_addr"], "additionalProperties": False,
                "properties": {"raft_addr": {"type": "string", "description": "host:port"}}}),
            "responses": {"201": _answer("added", {"type": "object"}), **_problems(400, 409, 422, 503)}}},
        "/api/v1/cluster/members/{member}": {"delete": {
            "summary": "Drain a member and remove it (node id or raft address)", "parameters": [
                {"name": "member", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _answer("removed", {"type": "object"}), **_problems(404, 503)}}},
        "/api/v1/cluster/leave": {"post": {
            "summary": "Drain this node before its removal (called by the leader)",
            "responses": {"200": _answer("drained", {"type": "object"})}}},
        "/health": _get("Liveness"),
        "/ready": {"get": {"summary": "Readiness (caught up, leader known, registered, executor running)",
                           "responses": {"200": _answer("ready", {"type": "object"}),
                                         "503": _answer("not ready", {"type": "object"})}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/v1/openapi.json": _get("This document"),
    }


def _post(params: list[dict[str, Any]], summary: str, status: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"summary": summary, "parameters": params,
                     "responses": {str(status): _answer(summary, schema), **_problems(404, 409, 422, 429, 503)}}}


def _get(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": _answer(summary, {"type": "object"})}}}


def _list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "array", "items": _ref(item)}}}


def _schemas() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    job_input = {
        "type": "object", "additionalProperties": False, "required": ["schedule", "webhook"],
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,127}$"},
            "schedule": {"type": "string", "examples": ["*/5 * * * *", "31 10-15 1 * * MON-FRI", "@every 10s",
                                                        "@at 2026-12-01T10:00:00Z"]},
            "timezone": {"type": "string", "default": "UTC"},
            "webhook": {"type": "object", "additionalProperties": False, "required": ["url"], "properties": {
                "url": {"type": "string", "format": "uri"}, "method": {"enum": list(METHODS)},
                "headers": string_map, "body": {}, "timeout_s": {"type": "number"},
                "signing_secret": {"type": "string", "minLength": 16, "maxLength": 256, "writeOnly": True}}},
            "retry": {"type": "object", "additionalProperties": False, "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
                "backoff_s": {"type": "number"}, "backoff_max_s": {"type": "number"}}},
            "priority": {"enum": list(PRIORITIES)}, "concurrency": {"enum": list(CONCURRENCY)},
            "delivery": {"enum": list(DELIVERY)}, "misfire": {"enum": list(MISFIRE)},
            "paused": {"type": "boolean"}, "tags": string_map,
        },
    }
    times = {k: {"type": ["string", "null"], "format": "date-time"} for k in ("next_fire_at", "created_at",
                                                                              "updated_at")}
    job = {"allOf": [job_input, {"type": "object", "properties": {**times, "version": {"type": "integer"}}}]}
    execution = {"type": "object", "properties": {k: {} for k in (
        "fire_id", "job_id", "scheduled_at", "attempt", "node", "status", "reason", "trigger", "http_status",
        "started_at", "finished_at", "duration_ms", "error", "committed_at")}}
    dead_letter = {"type": "object", "properties": {k: {} for k in (
        "fire_id", "job_id", "scheduled_at", "attempts", "last_status", "last_http_status", "last_error", "dead_at")}}
    problem = {"type": "object", "required": ["type", "title", "status"], "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}}}}}
    return {"JobInput": job_input, "Job": job, "Execution": execution, "DeadLetter": dead_letter, "Problem": problem}


def document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "schedb", "version": __version__},
            "paths": _paths(), "components": {"schemas": _schemas()}}


async def get_openapi(_request: web.Request) -> web.Response:
    return web.json_response(document())
