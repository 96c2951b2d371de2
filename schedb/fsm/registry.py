"""Service-registered jobs (inside the replicated state): a service declares its jobs, operators
decide when they run.

`RegisterJobs` carries a service's whole list. A job is `<service>.<name>`:
- new: created disabled (paused), with the declared schedule, callback URL,
  description and parameters schema;
- known: its definition is updated, but the operator's enable flag and
  schedule override are kept (the override is the schedule an operator set
  that differs from the declared default);
- no longer declared: marked `orphaned`, not deleted.

Deterministic like the rest of the state machine; the job handlers
(schedb.fsm.jobs) do the creating and replacing, so a registered job is an
ordinary job.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from schedb.commands import CreateJob, RegisterJobs, ReplaceJob
from schedb.fsm import jobs
from schedb.fsm.core import State
from schedb.fsm.model import Registration, Result
from schedb.fsm.tenancy import DEFAULT_TEAM, invalid
from schedb.jobspec import BODY_DEPTH_MAX, InvalidJob, json_depth, validate_job

SERVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")  # no dot: job ids are <service>.<name>
ENTRY_FIELDS = ("name", "schedule", "timezone", "description", "callback_url", "parameters_schema")
JOBS_PER_SERVICE_MAX = 500
DESCRIPTION_LEN_MAX = 1_000
SCHEMA_BYTES_MAX = 16_384


def register_jobs(state: State, cmd: RegisterJobs) -> Result:
    if not (isinstance(cmd.service, str) and SERVICE_PATTERN.fullmatch(cmd.service)):
        return invalid("service", "1-64 characters of A-Z a-z 0-9 _ - starting with a letter or digit")
    if not isinstance(cmd.jobs, list) or len(cmd.jobs) > JOBS_PER_SERVICE_MAX:
        return {"error": "invalid", "detail": f"jobs: a list of at most {JOBS_PER_SERVICE_MAX}"}
    specs, error = _specs(cmd)
    if error:
        return error
    results = [_register_one(state, cmd, spec, meta) for spec, meta in specs]
    declared = {spec["id"] for spec, _ in specs}
    orphaned = []
    for job_id, job in state.jobs.items():  # insertion order: the same on every node
        registration = job.get("registration")
        if registration and registration["service"] == cmd.service and job_id not in declared \
                and job["team"] == (cmd.team or DEFAULT_TEAM) and not registration["orphaned"]:
            registration["orphaned"] = True
            orphaned.append(job_id)
    return {"ok": True, "results": results, "orphaned": sorted(orphaned)}


def _specs(cmd: RegisterJobs) -> tuple[list[tuple[dict[str, Any], Registration]], Result | None]:
    """Every entry as a job spec and its registration record, or the first problem."""
    out: list[tuple[dict[str, Any], Registration]] = []
    for i, entry in enumerate(cmd.jobs):
        if not isinstance(entry, dict) or set(entry) - set(ENTRY_FIELDS):
            return [], invalid(f"jobs[{i}]", f"an object with some of {', '.join(ENTRY_FIELDS)}")
        name = entry.get("name")
        if not (isinstance(name, str) and SERVICE_PATTERN.fullmatch(name)):
            return [], invalid(f"jobs[{i}].name", "required: 1-64 characters of A-Z a-z 0-9 _ -")
        if any(meta["name"] == name for _, meta in out):
            return [], invalid(f"jobs[{i}].name", f"{name!r} appears twice")
        raw = {"id": f"{cmd.service}.{name}", "schedule": entry.get("schedule"),
               "timezone": entry.get("timezone", "UTC"), "paused": True,
               "webhook": {"url": entry.get("callback_url")}}
        try:
            spec = validate_job(raw)
        except InvalidJob as exc:
            return [], invalid(f"jobs[{i}].{exc.errors[0]['field']}", exc.errors[0]["message"])
        description, schema = entry.get("description", ""), entry.get("parameters_schema", {})
        if not isinstance(description, str) or len(description) > DESCRIPTION_LEN_MAX:
            return [], invalid(f"jobs[{i}].description", f"a string of at most {DESCRIPTION_LEN_MAX} characters")
        if not isinstance(schema, dict) or json_depth(schema) > BODY_DEPTH_MAX \
                or len(msgpack.packb(schema, use_bin_type=True)) > SCHEMA_BYTES_MAX:
            return [], invalid(f"jobs[{i}].parameters_schema", f"a JSON Schema object of at most {SCHEMA_BYTES_MAX} "
                                f"bytes, nested at most {BODY_DEPTH_MAX} deep")
        out.append((spec, {"service": cmd.service, "name": name, "description": description,
                           "parameters_schema": schema, "default_schedule": spec["schedule"],
                           "schedule_override": None, "orphaned": False}))
    return out, None


def _register_one(state: State, cmd: RegisterJobs, spec: dict[str, Any], meta: Registration) -> dict[str, Any]:
    job = state.jobs.get(spec["id"])
    if job is None:
        result = jobs.create_job(state, CreateJob(cmd.now_ms, spec, team=cmd.team, actor=cmd.actor))
    elif job.get("registration") is None or job["registration"]["service"] != cmd.service:
        result = {"error": "conflict", "detail": f"job {spec['id']!r} exists and is not {cmd.service}'s"}
    else:
        override = job["registration"]["schedule_override"]
        kept = {**job["spec"], "schedule": override or spec["schedule"], "timezone": spec["timezone"],
                "webhook": {**job["spec"]["webhook"], "url": spec["webhook"]["url"]}}
        result = jobs.replace_job(state, ReplaceJob(cmd.now_ms, kept, actor=cmd.actor))
        meta["schedule_override"] = override
    if "error" not in result:
        state.jobs[spec["id"]]["registration"] = meta
        if job is None:  # never enabled yet: enabling it later catches up nothing
            state.jobs[spec["id"]]["paused_ms"] = None
    return {"job_id": spec["id"], "error": result.get("error"), "detail": result.get("detail")}

