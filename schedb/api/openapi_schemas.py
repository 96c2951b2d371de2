"""The component schemas of the OpenAPI document (openapi.py): request bodies as the
validators accept them, responses as the handlers and views.py render them."""

from __future__ import annotations

from typing import Any

from schedb import jobspec, report, secretbox
from schedb.api import schedules
from schedb.api.jobs import STATUSES
from schedb.api.stats import PERCENTILES, WINDOW_S_MAX
from schedb.api.views import SECRET_MASK
from schedb.fsm import tenancy
from schedb.fsm.limits import QUOTA_NAMES
from schedb.fsm.model import USAGE_FIELDS

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
BOOL: dict[str, Any] = {"type": "boolean"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
TIME_OR_NULL: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
STR_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
NAME_PATTERN = tenancy.NAME_PATTERN.pattern  # teams and secret names share the form


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: tuple[str, ...] | list[str] | None = None, *,
        closed: bool = False) -> dict[str, Any]:
    """An object with these properties, all required unless `required` says which."""
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": list(props if required is None else required)}
    if closed:
        out["additionalProperties"] = False
    return out


def list_of(key: str, item: dict[str, Any], **more: Any) -> dict[str, Any]:
    return obj({key: {"type": "array", "items": item}, **more})


def _string_map(count_max: int, len_max: int) -> dict[str, Any]:
    return {"type": "object", "maxProperties": count_max, "propertyNames": {"minLength": 1, "maxLength": len_max},
            "additionalProperties": {"type": "string", "maxLength": len_max}}


def _job_input() -> dict[str, Any]:
    """What POST/PUT /api/v1/jobs accept (jobspec.validate_job)."""
    webhook = {
        "url": {"type": "string", "format": "uri", "minLength": 1, "maxLength": jobspec.URL_LEN_MAX,
                "description": "http:// or https://; checked against the egress policy",
                "examples": ["http://127.0.0.1:9999/hook"]},
        "method": {"enum": list(jobspec.METHODS), "default": "POST"},
        "headers": _string_map(jobspec.HEADERS_MAX, jobspec.HEADER_VALUE_LEN_MAX),
        "body": {"description": "any JSON (at most 64 KiB; integers within 64 bits); default: a JSON object "
                                "naming the fire"},
        "timeout_s": {"type": "number", "minimum": 0.001, "maximum": jobspec.TIMEOUT_S_MAX, "default": 30},
        "signing_secret": {"anyOf": [
            {"type": "string", "minLength": jobspec.SECRET_LEN_MIN, "maxLength": jobspec.SECRET_LEN_MAX},
            {"type": "string", "pattern": f"^{jobspec.SECRET_REFERENCE.pattern}$", "examples": ["{{secrets/hmac}}"]}],
            "writeOnly": True, "description": "HMAC key of X-Schedb-Signature, or a team secret; read back masked"},
    }
    retry = {"max_attempts": {"type": "integer", "minimum": 1, "maximum": jobspec.ATTEMPTS_MAX, "default": 3},
             "backoff_s": {"type": "number", "minimum": 0, "maximum": jobspec.BACKOFF_S_MAX, "default": 1},
             "backoff_max_s": {"type": "number", "minimum": 0, "maximum": jobspec.BACKOFF_S_MAX, "default": 300}}
    props = {
        "id": {"type": "string", "pattern": jobspec.JOB_ID_PATTERN.pattern, "description": "default: a generated id"},
        "schedule": {"type": "string", "examples": ["*/5 * * * *", "31 10-15 1 * * MON-FRI", "@every 10s",
                                                    "@hourly", "@at 2030-12-01T10:00:00Z"]},
        "timezone": {"type": "string", "default": "UTC", "examples": ["UTC", "Europe/Berlin"]},
        "webhook": obj(webhook, ["url"], closed=True),
        "retry": obj(retry, [], closed=True),
        "priority": {"enum": list(jobspec.PRIORITIES), "default": "normal"},
        "concurrency": {"enum": list(jobspec.CONCURRENCY), "default": jobspec.CONCURRENCY[0]},
        "delivery": {"enum": list(jobspec.DELIVERY), "default": jobspec.DELIVERY[0]},
        "misfire": {"enum": list(jobspec.MISFIRE), "default": jobspec.MISFIRE[0]},
        "paused": {"type": "boolean", "default": False},
        "tags": _string_map(jobspec.TAGS_MAX, jobspec.TAG_LEN_MAX),
        "depends_on": {"type": "array", "maxItems": jobspec.DEPENDS_ON_MAX, "uniqueItems": True,
                       "items": {"type": "string", "pattern": jobspec.JOB_ID_PATTERN.pattern},
                       "description": "upstream jobs of the team; with them, schedule may be left out"},
        "trigger_rule": {"enum": list(jobspec.TRIGGER_RULES), "default": jobspec.TRIGGER_RULES[0]},
        "breaker": {"anyOf": [{**obj({
            "enabled": BOOL,
            "failures": {"type": "integer", "minimum": 1, "maximum": jobspec.BREAKER_FAILURES_MAX},
            "failure_rate": {"type": "number", "minimum": 0.01, "maximum": 1},
            "window_s": {"type": "number", "minimum": 1, "maximum": jobspec.BREAKER_S_MAX},
            "cooldown_s": {"type": "number", "minimum": 1, "maximum": jobspec.BREAKER_S_MAX}}, [], closed=True),
            "minProperties": 1}, {"type": "null"}],
            "description": "this job's circuit breaker settings over the node's [breaker]: its calls use a circuit "
                           "of their own for these settings (enabled false: none); null: the node's"},
    }
    assert (tuple(props), tuple(webhook), tuple(retry)) == (jobspec.TOP_FIELDS, jobspec.WEBHOOK_FIELDS,
                                                            jobspec.RETRY_FIELDS)
    job = obj(props, ["webhook"], closed=True)  # schedule too, unless depends_on is given
    job["examples"] = [{"id": "nightly-report", "schedule": "0 30 2 * * *", "timezone": "Europe/Berlin",
                        "webhook": {"url": "http://127.0.0.1:9999/hook", "method": "POST",
                                    "headers": {"X-Team": "a"}, "body": {"any": "json"}, "timeout_s": 30},
                        "retry": {"max_attempts": 3, "backoff_s": 1, "backoff_max_s": 300},
                        "tags": {"team": "billing"}}]
    return job


def _patch_of(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396) of an object: every field optional, null removes it."""
    out = {k: v for k, v in schema.items() if k not in ("required", "examples")}
    if "properties" in schema:
        out["properties"] = {k: _nullable(_patch_of(v) if "properties" in v else v)
                             for k, v in schema["properties"].items()}
    return out


def _replacement(job_input: dict[str, Any]) -> dict[str, Any]:
    """PUT takes a job as the API answers it, too: the fields the server sets are ignored, and
    `team`, if given, must be the job's (jobs.py)."""
    ignored = {"readOnly": True, "description": "ignored"}
    props = {**job_input["properties"], **{k: ignored for k in ("next_fire_at", "created_at", "updated_at",
                                                                   "version", "registration",
                                                                   "schedule_preview")},
             "team": {"type": "string", "readOnly": True, "description": "the job's team; another one: 422"}}
    return {**job_input, "properties": props}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]} if {"type", "enum", "anyOf"} & set(schema) else schema  # any JSON


def _job(job_input: dict[str, Any]) -> dict[str, Any]:
    """A job as the API answers it (views.job_view): every field filled in, the secret masked."""
    props = dict(job_input["properties"])
    webhook_props = dict(props["webhook"]["properties"])
    webhook_props["signing_secret"] = {"enum": [SECRET_MASK, None], "description": "masked when set"}
    webhook_props["url"] = STR  # as stored; the validator's URL rules are not JSON Schema's "uri"
    props["webhook"] = obj(webhook_props)
    props["retry"] = obj(props["retry"]["properties"])
    props["id"] = STR
    props["schedule"] = {"type": ["string", "null"], "description": "null: it runs after its upstreams only"}
    props.update({"next_fire_at": TIME_OR_NULL, "created_at": TIME, "updated_at": TIME,
                  "version": {"type": "integer", "minimum": 1, "description": "the ETag"}, "team": STR,
                  "registration": {"anyOf": [ref("Registration"), {"type": "null"}]}})
    required = list(props)
    props["schedule_preview"] = {"anyOf": [obj({"description": STR, "next": {"type": "array", "items": TIME}}),
                                           {"type": "null"}], "description": "in a single job's answer only"}
    return obj(props, required)


def _execution() -> dict[str, Any]:
    return obj({"fire_id": STR, "job_id": STR, "scheduled_at": TIME, "attempt": INT, "node": STR,
                "status": {"type": "string", "examples": list(STATUSES)},
                "http_status": {"type": ["integer", "null"]}, "started_at": TIME_OR_NULL,
                "finished_at": TIME_OR_NULL, "duration_ms": COUNT, "error": STR_OR_NULL,
                "committed_at": TIME_OR_NULL, "trigger": {"type": "string", "examples": ["schedule", "manual"]},
                "triggered_by": {"type": "string", "examples": ["schedule", "manual:3f2a…", "dependency:<run id>"]},
                "reason": STR_OR_NULL, "report": {"anyOf": [ref("RunReport"), {"type": "null"}]}})


def _registration() -> dict[str, Any]:
    entry = obj({"name": STR, "schedule": STR, "timezone": STR, "description": STR, "callback_url": STR,
                 "parameters_schema": {"type": "object"}}, ["name", "schedule", "callback_url"], closed=True)
    return {
        "Registration": obj({"service": STR, "name": STR, "description": STR, "parameters_schema": {"type": "object"},
                             "default_schedule": STR, "schedule_override": STR_OR_NULL, "orphaned": BOOL}),
        "RegistrationInput": obj({"service": STR, "jobs": {"type": "array", "items": entry}}, closed=True),
        "RegistrationResult": obj({"service": STR, "orphaned": {"type": "array", "items": STR},
                                   "jobs": {"type": "array", "items": obj(
                                       {"id": STR, "registered": BOOL, "detail": STR}, ["id", "registered"])}}),
        "RegisteredJobs": list_of("jobs", ref("Job")),
    }


def _run() -> dict[str, Any]:
    step = obj({"status": {"enum": ["waiting", "running", "succeeded", "failed", "skipped", "upstream_failed",
                                    "deleted"]}, "fire_id": STR_OR_NULL})
    return obj({"run_id": STR, "root": STR, "team": STR, "started_at": TIME, "finished_at": TIME_OR_NULL,
                "steps": {"type": "object", "additionalProperties": step}})


def _run_report() -> dict[str, Any]:
    """What the webhook's JSON answer said about its work (schedb.report); only the fields it sent."""
    item = {"type": "integer", "minimum": 0, "maximum": report.ITEM_MAX}
    out = obj({**dict.fromkeys(report.ITEM_FIELDS, item),
               "message": {"type": "string", "maxLength": report.MESSAGE_LEN_MAX}}, [], closed=True)
    out["minProperties"] = 1
    return out


def _job_stats() -> dict[str, Any]:
    int_or_null = {"type": ["integer", "null"], "minimum": 0}
    durations = obj({**{f"p{p}": int_or_null for p in PERCENTILES}, "max": int_or_null})
    durations["description"] = "of the attempts that called the webhook (nearest rank); null without any"
    return obj({
        "job_id": STR, "window_s": {"type": "integer", "minimum": 1, "maximum": WINDOW_S_MAX},
        "from": TIME, "to": TIME,
        "history_per_job": {**COUNT, "description": "how many executions the cluster keeps per job"},
        "truncated": {**BOOL, "description": "the window reaches past the stored history"},
        "executions": COUNT, "by_status": {"type": "object", "additionalProperties": COUNT},
        "attempts": {**COUNT, "description": "executions that called the webhook: succeeded, failed, timed_out"},
        "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                         "description": "succeeded / attempts; null without attempts"},
        "duration_ms": durations,
        "reports": {**COUNT, "description": "executions whose answer carried a run report"},
        "items": obj({name.removeprefix("items_"): COUNT for name in report.ITEM_FIELDS}),
        "last_message": STR_OR_NULL, "last_message_at": TIME_OR_NULL})


def _tenancy() -> dict[str, Any]:
    team = {"type": "string", "pattern": NAME_PATTERN}
    quotas = obj({name: COUNT for name in QUOTA_NAMES})
    key = {"id": STR, "team": STR, "role": {"enum": list(tenancy.ROLES)}, "name": STR,
           "created_at": TIME, "revoked_at": TIME_OR_NULL, "created_by": STR_OR_NULL}
    secret = {"team": STR, "name": STR, "version": INT, "created_at": TIME, "updated_at": TIME}
    audit = obj({"seq": INT, "at": TIME, "key": STR, "team": STR, "role": STR, "remote": STR, "action": STR,
                 "target": STR, "result": STR})
    return {
        "KeyInput": obj({"team": team, "role": {"enum": list(tenancy.ROLES)},
                         "name": {"type": "string", "maxLength": tenancy.KEY_LABEL_LEN_MAX, "default": ""}},
                        ["team", "role"], closed=True),
        "Key": obj(key), "KeyCreated": obj({**key, "key": {"type": "string", "description": "shown once"}}),
        "KeyList": list_of("keys", ref("Key")),
        "Whoami": obj({"auth": {**BOOL, "description": "auth.enabled on this node"},
                       "key_id": {**STR_OR_NULL, "description": "config-admin for the config's admin key; null "
                                                                "with auth off"},
                       "team": STR, "role": {"enum": list(tenancy.ROLES)}}),
        "SecretInput": obj({"name": {"type": "string", "pattern": f"^{secretbox.SECRET_NAME_PATTERN.pattern}$"},
                            "value": {"type": "string", "minLength": 1, "maxLength": secretbox.SECRET_VALUE_BYTES_MAX,
                                      "writeOnly": True}}, closed=True),
        "Secret": obj(secret), "SecretList": list_of("secrets", ref("Secret")),
        "Quotas": quotas,
        "QuotasInput": {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
            name: {"type": ["integer", "null"], "minimum": 1, "maximum": tenancy.QUOTA_MAX}
            for name in QUOTA_NAMES}, "description": "null: back to the config's default"},
        "TeamQuotas": obj({"team": STR, "quotas": ref("Quotas"), "set_for_team": {"type": "array", "items": STR}}),
        "TeamQuotasSet": obj({"team": STR, "quotas": ref("Quotas")}),
        "Usage": obj({"team": STR, "usage": obj({name: COUNT for name in USAGE_FIELDS}), "jobs": COUNT,
                      "fires_this_minute": COUNT, "secrets": COUNT, "quotas": ref("Quotas")}),
        "AuditList": list_of("records", audit),
    }


def _cluster() -> dict[str, Any]:
    member = obj({"node_id": STR_OR_NULL, "raft_addr": STR, "http_addr": STR_OR_NULL,
                  "role": STR, "self": BOOL, "active_fires": COUNT, "jobs_assigned": COUNT,
                  "connected": BOOL, "match_index": {"type": ["integer", "null"]},
                  "last_ack_ms_ago": {"type": ["number", "null"]}, "executor_alive": {"type": ["boolean", "null"]},
                  "draining": BOOL}, ["node_id", "raft_addr", "role", "self", "active_fires", "jobs_assigned"])
    counters = {"type": "object", "additionalProperties": INT}
    circuit = obj({"team": STR, "target": STR, "override": {"type": ["object", "null"], "description":
                   "the settings of the jobs this circuit is for (their `breaker`); null: the node's"},
                   "state": {"enum": ["closed", "half_open", "open"]},
                   "failures_in_a_row": COUNT, "open_for_s": {"type": "number"}, "opened": COUNT})
    worker = obj({"pid": INT, "in_flight": COUNT, "cpu_share": {"type": "number"}, "retiring": BOOL})
    workers = {**obj({"min": COUNT, "max": COUNT, "target": COUNT, "running": {"type": "array", "items": worker},
                      "exits": obj({"workers": COUNT, "calls": COUNT})}),
               "type": ["object", "null"], "description": "this node's delivery worker processes (schedb.worker_pool); "
               "null: the node's own loop calls the webhooks (executor.workers_max = 0)"}
    status = obj({"node_id": STR, "role": STR, "leader": obj({"node_id": STR_OR_NULL, "raft_addr": STR_OR_NULL}),
                  "term": INT, "commit_index": INT, "last_applied": INT, "log_len": INT,
                  "members": {"type": "array", "items": member}, "jobs": COUNT, "active_fires": COUNT,
                  "pending_fires": COUNT, "dead_letters": COUNT, "counters": counters,
                  "executor": obj({"scheduled": COUNT, "in_flight": COUNT, "workers": workers}),
                  "circuits": {"type": "array", "description": "this node's circuits per team and webhook "
                               "target that are open, half-open or failing (schedb.breaker)", "items": circuit}})
    drain = {"type": "object", "additionalProperties": COUNT, "examples": [{"handed_back": 0, "unfinished": 0,
                                                                          "uncommitted": 0}]}
    members = {"type": "array", "items": STR}
    return {
        "ClusterStatus": status, "Drain": drain,
        "MemberInput": obj({"raft_addr": {"type": "string", "description": "the new node's raft.listen, host:port"}},
                           closed=True),
        "MemberAdded": obj({"added": STR, "node_id": STR_OR_NULL, "registered": BOOL, "members": members}),
        "MemberRemoved": obj({"removed": STR, "node_id": STR_OR_NULL, "drained": BOOL,
                              "drain": {"anyOf": [ref("Drain"), {"type": "null"}]}, "members": members}),
        "Health": obj({"status": {"const": "ok"}, "node_id": STR}),
        "Ready": obj({"ready": BOOL, "checks": {"type": "object", "additionalProperties": BOOL}, "role": STR}),
    }


def _schedule_preview() -> dict[str, Any]:
    """POST /api/v1/schedules/preview (schedules.py)."""
    instants = {"type": "array", "maxItems": schedules.COUNT_MAX}
    return {
        "SchedulePreviewInput": obj({
            "expression": {"type": "string", "examples": ["30 2 * * *", "31 10-15 1 * * MON-FRI", "@every 1m30s"]},
            "timezone": {"type": "string", "default": "UTC", "examples": ["Europe/Berlin"]},
            "count": {"type": "integer", "minimum": 1, "maximum": schedules.COUNT_MAX,
                      "default": schedules.COUNT_DEFAULT},
            "start": {**TIME, "description": "list fires at or after this instant (1970 to 9999); default: now"}},
            ["expression"], closed=True),
        "SchedulePreview": obj({
            "expression": STR, "timezone": STR, "description": {**STR, "examples": ["At 02:30"]}, "start": TIME,
            "next": {**instants, "items": TIME, "description": "RFC 3339 UTC; fewer than count when the "
                                                              "schedule ends (@at) or reaches the year 9999"},
            "next_local": {**instants, "items": TIME, "description": "the same instants with the timezone's "
                                                                     "offset, e.g. 2027-03-28T03:00:00.000+02:00"}}),
    }


def schemas() -> dict[str, Any]:
    job_input = _job_input()
    problem = obj({"type": {"type": "string", "examples": ["urn:schedb:problem:invalid"]}, "title": STR,
                   "status": {"type": "integer", "minimum": 400, "maximum": 599}, "detail": STR,
                   "errors": {"type": "array", "items": obj({"field": STR, "message": STR})}},
                  ["type", "title", "status", "detail"])
    problem["description"] = "RFC 9457; `errors` names each field at fault"
    bulk_item = obj({"id": STR_OR_NULL, "status": {"enum": [201, 403, 409, 422, 429]}, "detail": STR_OR_NULL},
                    ["id", "status"])
    return {
        "JobInput": job_input, "JobReplace": _replacement(job_input), "JobPatch": _patch_of(_replacement(job_input)),
        "Job": _job(job_input),
        "JobList": obj({"jobs": {"type": "array", "items": ref("Job")},
                        "next_after": {**STR_OR_NULL, "description": "the next page's `after`; null: the last page"},
                        "total": {**COUNT, "description": "with total=true: how many jobs match"}},
                       ["jobs", "next_after"]),
        "BulkInput": obj({"jobs": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ref("JobInput")}},
                         closed=True),
        "BulkResult": obj({"created": COUNT, "failed": COUNT, "items": {"type": "array", "items": bulk_item}}),
        "BackfillInput": obj({"start": TIME, "end": {**TIME, "description": "inclusive, not in the future"}},
                             closed=True),
        "Backfill": obj({"job_id": STR, "fires": COUNT, "fire_ids": {"type": "array", "items": STR,
                                                                      "description": "the first ten"},
                         "already_active": COUNT}),
        "Triggered": obj({"job_id": STR, "fire_id": STR}),
        **_schedule_preview(),
        "TriggerInput": obj({"params": {"type": "object", "description": "sent with the webhook (at most 4 KiB)"},
                             "force": {"type": "boolean", "default": False}}, [], closed=True),
        "Run": _run(), "RunList": list_of("runs", ref("Run")), **_registration(),
        "Execution": _execution(), "ExecutionList": list_of("executions", ref("Execution")),
        "RunReport": _run_report(), "JobStats": _job_stats(),
        "DeadLetter": obj({"fire_id": STR, "job_id": STR, "scheduled_at": TIME, "attempts": INT,
                           "last_status": STR, "last_http_status": {"type": ["integer", "null"]},
                           "last_error": STR_OR_NULL, "dead_at": TIME}),
        "DeadLetterList": list_of("dead_letters", ref("DeadLetter"), total=COUNT),
        "Replayed": obj({"fire_id": STR, "replayed": {"const": True}}),
        **_tenancy(), **_cluster(), "Problem": problem,
    }
