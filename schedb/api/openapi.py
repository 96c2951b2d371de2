"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the HTTP API.

Written by hand next to the handlers (schemas in openapi_schemas.py); a test checks that
every route the app serves is described and that the job schema names exactly the fields
the validator accepts, and tests/integration/test_schemathesis.py checks the answers of a
running cluster against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb import __version__
from schedb.api.joblist import JOB_STATES, Q_LEN_MAX, SORTS
from schedb.api.jobs import LIST_LIMIT_MAX, STATUSES
from schedb.api.openapi_schemas import NAME_PATTERN, ref, schemas
from schedb.api.stats import WINDOW_S_DEFAULT, WINDOW_S_MAX
from schedb.api.teams import AUDIT_LIMIT_MAX
from schedb.fsm.jobs import IDEMPOTENCY_KEY_LEN_MAX
from schedb.jobspec import JOB_ID_PATTERN

JSON = "application/json"
PROBLEM = "application/problem+json"
MERGE_PATCH = "application/merge-patch+json"

# Problem answers, by status: what each means on this API.
PROBLEMS = {
    400: "malformed request: body not JSON, or a bad query parameter or header",
    401: "no API key, or an unknown or revoked one",
    403: "the key's role or team may not do this",
    404: "no such resource (or it belongs to another team)",
    409: "conflict: the id exists already, or the resource kept changing",
    412: "If-Match names another version",
    413: "the body is too large, or the request has too many header fields",
    415: "the body is not application/json",
    422: "invalid fields (see `errors`)",
    429: "over the team's request rate or a quota, or too many commands pending (see Retry-After)",
    503: "no leader, the outcome of the change is unknown, or the feature is off on this node",
}
AUTH_CODES = (401, 403, 429, 503)
BODY_CODES = (400, 413, 415, 422)


def _param(name: str, where: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "schema": schema}
    if where == "path":
        out["required"] = True
    if description:
        out["description"] = description
    return out


JOB_ID = _param("job_id", "path", {"type": "string", "pattern": JOB_ID_PATTERN.pattern})
FIRE_ID = _param("fire_id", "path", {"type": "string"}, '"<job_id>:<scheduled_unix_ms>"')
TEAM_PATH = _param("team", "path", {"type": "string", "pattern": NAME_PATTERN})
IF_MATCH = _param("If-Match", "header", {"type": "string", "pattern": '^(\\*|(W/)?"[1-9][0-9]{0,17}")$'},
                  'an ETag this API returned, e.g. "3"; absent or * for any version')
LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 100})
STATUS = _param("status", "query", {"enum": list(STATUSES)})
JOB_FILTER = _param("job_id", "query", {"type": "string"}, "only this job's")
TEAM_FILTER = _param("team", "query", {"type": "string"}, "only this team's")
ACTING_TEAM = _param("team", "query", {"type": "string", "pattern": NAME_PATTERN},
                     "act for this team (an admin's choice; other keys may name only their own)")


def _headers(*names: str) -> dict[str, Any]:
    """Response headers: every answer carries X-Correlation-ID (telemetry.py)."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Correlation-ID", *names)}


def _answer(description: str, schema: str | None = None, *headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "headers": _headers(*headers)}
    if schema is not None:
        out["content"] = {JSON: {"schema": ref(schema)}}
    return out


def _body(schema: str, *media: str) -> dict[str, Any]:
    return {"required": True, "content": {m: {"schema": ref(schema)} for m in media or (JSON,)}}


def _op(summary: str, answers: dict[int, dict[str, Any]], *problems: int, params: tuple[dict[str, Any], ...] = (),
        body: dict[str, Any] | None = None, public: bool = False, role: str = "") -> dict[str, Any]:
    """One operation: its own answers and problems, plus those every route can give — 413 for too
    many header fields anywhere; 401/403/429/503 from authentication, the team's request rate and
    the pending-command bound; 400/413/415/422 wherever a body is read."""
    codes = {413, *problems, *(() if public else AUTH_CODES), *(BODY_CODES if body else ())}
    responses = {str(code): answer for code, answer in answers.items()}
    responses.update({str(code): {"$ref": f"#/components/responses/Problem{code}"} for code in sorted(codes)})
    out: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
    out["description"] = "Public." if public else f"Needs the {role or 'viewer, operator or admin'} role."
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = body
    if public:
        out["security"] = []
    return out


def _job_list_params() -> tuple[dict[str, Any], ...]:
    """GET /api/v1/jobs (joblist.py); every filter narrows the list further."""
    return (
        LIMIT, _param("after", "query", {"type": "string"}, "the previous page's next_after (a job id, or "
                      "with sort=next_fire an opaque cursor)"),
        _param("sort", "query", {"enum": list(SORTS), "default": "id"}, "next_fire: soonest first, jobs "
               "without a next fire last, ties by id"),
        _param("q", "query", {"type": "string", "maxLength": Q_LEN_MAX}, "case-insensitive substring of the id "
               "or the description"),
        _param("status", "query", {"enum": list(JOB_STATES)}, "active (not paused), paused, or orphaned (a "
               "registered job its service no longer declares)"),
        _param("next_before", "query", {"type": "string", "format": "date-time"}, "only jobs whose next fire is "
               "at or before this time"),
        _param("tag", "query", {"type": "string"}, "key:value"),
        _param("paused", "query", {"type": "boolean"}), TEAM_FILTER,
        _param("total", "query", {"type": "boolean", "default": False}, "also count every job that matches"))


def _job_paths() -> dict[str, Any]:
    job = _answer("the job", "Job", "ETag")
    writer = "operator or admin"
    return {
        "/api/v1/jobs": {
            "post": _op("Create a job (honours Idempotency-Key)", {
                201: _answer("created", "Job", "ETag", "Location"),
                200: _answer("a repeated Idempotency-Key: the job the first request created", "Job", "ETag")},
                409, role=writer, body=_body("JobInput"), params=(ACTING_TEAM, _param(
                    "Idempotency-Key", "header", {"type": "string", "maxLength": IDEMPOTENCY_KEY_LEN_MAX}))),
            "get": _op("List jobs: filtered, in id or next-fire order, a page at a time, optionally counted",
                       {200: _answer("a page", "JobList")}, 400, params=_job_list_params()),
        },
        "/api/v1/jobs/bulk": {"post": _op(
            "Create up to 1,000 jobs in one commit; all are validated first, then each succeeds or fails "
            "(409 exists, 429 slot or quota full) on its own", {200: _answer("per-job outcomes", "BulkResult")},
            role=writer, body=_body("BulkInput"), params=(ACTING_TEAM,))},
        "/api/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": _op("Read a job (with ?preview=true, its next 5 fires and the schedule in words)", {200: job},
                       400, 404, params=(_param("preview", "query", {"enum": ["true", "false"]}),)),
            "put": _op("Replace a job", {200: job}, 404, 409, 412, role=writer, params=(IF_MATCH,),
                       body=_body("JobReplace")),
            "patch": _op("Update a job by JSON merge patch (RFC 7396); retried on a concurrent change unless "
                         "If-Match pins a version", {200: job}, 404, 409, 412, role=writer, params=(IF_MATCH,),
                         body=_body("JobPatch", MERGE_PATCH, JSON)),
            "delete": _op("Delete a job and cancel its pending fires (409 if others depend on it, unless "
                          "force=true)", {204: _answer("deleted")}, 400, 404, 409, 412, role=writer,
                          params=(IF_MATCH, _param("force", "query", {"enum": ["true", "false"]}))),
        },
        "/api/v1/jobs/{job_id}/executions": {"get": _op(
            "The job's executions, newest first", {200: _answer("executions", "ExecutionList")}, 400, 404,
            params=(JOB_ID, LIMIT, STATUS))},
        "/api/v1/jobs/{job_id}/stats": {"get": _op(
            "Run statistics over the job's stored executions that finished within the window: counts by "
            "status, success rate, durations, item totals from the webhook's run reports",
            {200: _answer("statistics", "JobStats")}, 400, 404, params=(JOB_ID, _param(
                "window", "query", {"type": "integer", "minimum": 1, "maximum": WINDOW_S_MAX,
                                    "default": WINDOW_S_DEFAULT}, "seconds back from now")))},
        "/api/v1/jobs/{job_id}/trigger": {"post": {**_op(
            "Fire now, with optional params; 409 while a run of the job is in progress unless forced",
            {202: _answer("the fire is pending", "Triggered")}, 404, 409, 422, role=writer, params=(JOB_ID,),
            body=_body("TriggerInput")), "requestBody": {**_body("TriggerInput"), "required": False}}},
        "/api/v1/jobs/{job_id}/pause": {"post": _op(
            "Stop scheduling", {200: job}, 400, 404, 409, 412, 422, role=writer, params=(JOB_ID, IF_MATCH))},
        "/api/v1/jobs/{job_id}/resume": {"post": _op(
            "Restart scheduling (occurrences missed meanwhile follow the misfire policy)", {200: job},
            400, 404, 409, 412, 422, role=writer, params=(JOB_ID, IF_MATCH))},
        "/api/v1/jobs/{job_id}/backfill": {"post": _op(
            "Fire the occurrences of a past range (at most 1,000)", {202: _answer("fires pending", "Backfill")},
            404, role=writer, params=(JOB_ID,), body=_body("BackfillInput"))},
    }


def _run_paths() -> dict[str, Any]:
    """Registrations, workflow runs, executions cluster-wide, schedule previews, dead letters."""
    writer = "operator or admin"
    return {
        "/api/v1/registrations": {
            "post": _op("A service declares its jobs: new ones start disabled, known ones keep the operator's "
                        "enable flag and schedule override, the rest are marked orphaned",
                        {200: _answer("registered", "RegistrationResult")}, 409, role=writer,
                        body=_body("RegistrationInput"), params=(ACTING_TEAM,)),
            "get": _op("Registered jobs", {200: _answer("jobs", "RegisteredJobs")},
                       params=(_param("service", "query", {"type": "string"}),))},
        "/api/v1/runs": {"get": _op("Recent workflow runs, newest first", {200: _answer("runs", "RunList")}, 400,
                                    params=(LIMIT, JOB_FILTER))},
        "/api/v1/runs/{run_id}": {"get": _op("A workflow run: each step's state", {200: _answer("the run", "Run")},
                                             404, params=(_param("run_id", "path", {"type": "string"}),))},
        "/api/v1/executions": {"get": _op(
            "Recent executions cluster-wide, newest first", {200: _answer("executions", "ExecutionList")}, 400,
            params=(LIMIT, STATUS, JOB_FILTER))},
        "/api/v1/schedules/preview": {"post": _op(
            "When a schedule would fire: the next instants at or after `start`, in UTC and in the timezone's "
            "local time (daylight saving time as a job gets it), and the expression in words; stores nothing",
            {200: _answer("the instants", "SchedulePreview")}, body=_body("SchedulePreviewInput"))},
        "/api/v1/dlq": {"get": _op("Dead letters, newest first", {200: _answer("dead letters", "DeadLetterList")},
                                   400, params=(LIMIT, JOB_FILTER))},
        "/api/v1/dlq/{fire_id}": {"delete": _op("Drop a dead letter", {204: _answer("dropped")}, 404, role=writer,
                                                params=(FIRE_ID,))},
        "/api/v1/dlq/{fire_id}/replay": {"post": _op(
            "Deliver a dead letter again", {202: _answer("a new fire is pending", "Replayed")}, 404, 409,
            role=writer, params=(FIRE_ID,))},
    }


def _team_paths() -> dict[str, Any]:
    secret_params = (ACTING_TEAM,)
    return {
        "/api/v1/secrets": {
            "post": _op("Create (201) or replace (200) a team secret; the value is never returned",
                        {201: _answer("created", "Secret"), 200: _answer("replaced", "Secret")},
                        role="operator or admin", params=secret_params, body=_body("SecretInput")),
            "get": _op("The team's secrets (names and versions only)", {200: _answer("secrets", "SecretList")},
                       400, params=secret_params),
        },
        "/api/v1/secrets/{name}": {"delete": _op(
            "Delete a team secret", {204: _answer("deleted")}, 400, 404, role="operator or admin",
            params=(_param("name", "path", {"type": "string"}), *secret_params))},
        "/api/v1/teams/{team}/usage": {"get": _op(
            "What the team used since the cluster began, and now", {200: _answer("usage", "Usage")}, 404,
            params=(TEAM_PATH,))},
        "/api/v1/teams/{team}/quotas": {
            "parameters": [TEAM_PATH],
            "get": _op("The team's quotas", {200: _answer("quotas", "TeamQuotas")}, 404),
            "put": _op("Set some of the team's quotas (null: back to the default)",
                       {200: _answer("the quotas now", "TeamQuotasSet")}, 404, role="admin",
                       body=_body("QuotasInput")),
        },
        "/api/v1/keys": {
            "post": _op("Create an API key (the token is in the answer, once)",
                        {201: _answer("created", "KeyCreated", "Location")}, 409, role="admin",
                        body=_body("KeyInput")),
            "get": _op("API keys (never their tokens)", {200: _answer("keys", "KeyList")}, role="admin",
                       params=(TEAM_FILTER,)),
        },
        "/api/v1/whoami": {"get": _op("The caller's key, team and role (with auth off: an admin of the default "
                                      "team, no key)", {200: _answer("the caller", "Whoami")})},
        "/api/v1/keys/{key_id}": {"delete": _op(
            "Revoke an API key", {204: _answer("revoked")}, 404, role="admin",
            params=(_param("key_id", "path", {"type": "string"}),))},
        "/api/v1/audit": {"get": _op(
            "Audit records, newest first", {200: _answer("records", "AuditList")}, 400, role="admin", params=(
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT_MAX}),
                _param("after", "query", {"type": "integer", "minimum": 0, "maximum": 2**53}, "only records "
                       "after this seq"), TEAM_FILTER))},
    }


def _cluster_paths() -> dict[str, Any]:
    return {
        "/api/v1/cluster": {"get": _op("Leader, members, roles, connectivity, log indexes, counters",
                                       {200: _answer("the cluster as this node sees it", "ClusterStatus")})},
        "/api/v1/cluster/members": {"post": _op(
            "Add a running node (raft.join = true) as a member; followers pass it to the leader",
            {201: _answer("added", "MemberAdded")}, 409, role="admin", body=_body("MemberInput"))},
        "/api/v1/cluster/members/{member}": {"delete": _op(
            "Drain a member and remove it (node id or raft address)", {200: _answer("removed", "MemberRemoved")},
            404, role="admin", params=(_param("member", "path", {"type": "string"}),))},
        "/api/v1/cluster/leave": {"post": _op("Drain this node before its removal (called by the leader)",
                                              {200: _answer("drained", "Drain")}, role="admin")},
        "/api/v1/events": {"get": _op(
            "Live updates for the console (Server-Sent Events): hello, cluster, executions, jobs, dead_letters, "
            "circuit (one of this node's circuits changed state), resync, unauthorized; each `data:` line is one "
            "JSON event, filtered to the key's team",
            {200: {"description": "an endless event stream", "headers": _headers(),
                   "content": {"text/event-stream": {"schema": {"type": "string"}}}}}, 503)},
        "/health": {"get": _op("Liveness", {200: _answer("alive", "Health")}, public=True)},
        "/ready": {"get": _op("Readiness: caught up, leader known, registered, executor running", {
            200: _answer("ready", "Ready"), 503: _answer("not ready (a readiness body, not a problem)", "Ready")},
            public=True)},
        "/metrics": {"get": _op("Prometheus text format", {200: {
            "description": "metrics", "headers": _headers(),
            "content": {"text/plain": {"schema": {"type": "string"}}}}}, role="admin")},
        "/api/v1/openapi.json": {"get": _op("This document", {200: {
            "description": "OpenAPI 3.1", "headers": _headers(), "content": {JSON: {"schema": {"type": "object"}}}}},
            public=True)},
    }


def _components() -> dict[str, Any]:
    problem = {PROBLEM: {"schema": ref("Problem")}}
    responses = {}
    for code, text in PROBLEMS.items():
        extra = {401: ("WWW-Authenticate",), 429: ("Retry-After",)}.get(code, ())
        responses[f"Problem{code}"] = {"description": text, "headers": _headers(*extra), "content": problem}
    string = {"type": "string"}
    headers = {
        "X-Correlation-ID": {"required": True, "schema": string,
                             "description": "the request's X-Correlation-ID if well-formed, else a new one"},
        "ETag": {"required": True, "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
                 "description": "the job's version, for If-Match"},
        "Location": {"required": True, "schema": string},
        "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        "description": "seconds"},
        "WWW-Authenticate": {"required": True, "schema": string},
    }
    security = {"bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    return {"schemas": schemas(), "responses": responses, "headers": headers, "securitySchemes": security}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "schedb", "version": __version__,
                 "description": "A Raft-replicated webhook scheduler. Errors are application/problem+json. With auth "
                                "on (auth.enabled), every route but /health, /ready and this document needs "
                                "an API key; roles: viewer (read), operator (write its team), admin (everything)."},
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {**_job_paths(), **_run_paths(), **_team_paths(), **_cluster_paths()},
        "components": _components(),
    }


async def get_openapi(_request: web.Request) -> web.Response:
    return web.json_response(document())
