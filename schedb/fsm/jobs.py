"""Jobs inside the replicated state: create, replace, delete, and fires made by hand
(trigger, backfill).

Functions of (state, command), called by apply (schedb.fsm.machine); deterministic, no clock
but `state.now_ms`. A job sits in the slot of its next occurrence (State.place); its fires
are in the book. A job belongs to a team (schedb.fsm.tenancy): another team's job does not
exist for an actor scoped to a team.
"""

from __future__ import annotations

from typing import Any, cast

from schedb.commands import BackfillJob, CreateJob, CreateJobs, DeleteJob, ReplaceJob, TriggerJob
from schedb.fsm import history, occurrences, tenancy, workflow
from schedb.fsm.core import State, next_fire
from schedb.fsm.fires import PENDING, fire_id_of
from schedb.fsm.model import Job, Result, StepStatus, Trigger
from schedb.jobspec import InvalidJob, validate_job
from schedb.schedule import parse_schedule

IDEMPOTENCY_KEY_LEN_MAX = 200
BACKFILL_FIRES_MAX = 1_000


def create_job(state: State, cmd: CreateJob) -> Result:
    key = cmd.idempotency_key
    if not isinstance(key, str) or len(key) > IDEMPOTENCY_KEY_LEN_MAX:
        return {"error": "invalid", "detail": f"idempotency key must be at most {IDEMPOTENCY_KEY_LEN_MAX} chars"}
    team = cmd.team or tenancy.DEFAULT_TEAM
    if not tenancy.valid_team(team):
        return {"error": "invalid", "detail": "team: not a valid team name"}
    _expire_idempotency_keys(state)
    key = f"{team}\0{key}" if key else ""  # one team's key says nothing about another's jobs
    if key and key in state.idempotency and state.idempotency[key][0] in state.jobs:
        state.counters["idempotent_replays"] += 1
        return {"ok": True, "job_id": state.idempotency[key][0], "replayed": True}
    spec, error = _revalidate(cmd.spec)
    if error:
        return error
    if error := tenancy.create_refusal(state, cmd.actor, team):
        return error
    job_id = spec["id"]
    if job_id in state.jobs:
        return {"error": "conflict", "detail": f"job {job_id!r} already exists"}
    if error := workflow.dependency_error(state, spec, team):
        return error
    first_ms = next_fire(spec, state.now_ms)
    if error := _slot_full(state, first_ms):
        return error
    state.jobs[job_id] = {"spec": spec, "created_ms": state.now_ms, "updated_ms": state.now_ms,
                          "version": 1, "next_fire_ms": None, "active_fires": [], "team": team,
                          "paused_ms": state.now_ms if spec["paused"] else None}
    state.team_jobs[team] = state.team_jobs.get(team, 0) + 1
    workflow.link(state, job_id, [], spec["depends_on"])
    state.place(job_id, first_ms)
    if key:
        state.idempotency[key] = (job_id, state.now_ms + state.limits.idempotency_ttl_ms)
        while len(state.idempotency) > state.limits.idempotency_keys_max:
            del state.idempotency[next(iter(state.idempotency))]
    return {"ok": True, "job_id": job_id}


def create_jobs(state: State, cmd: CreateJobs) -> Result:
    if not isinstance(cmd.specs, list) or len(cmd.specs) > state.limits.bulk_create_max:
        return {"error": "invalid", "detail": f"specs must be a list of at most {state.limits.bulk_create_max}"}
    results = []
    for spec in cmd.specs:
        result = create_job(state, CreateJob(cmd.now_ms, spec, team=cmd.team, actor=cmd.actor))
        results.append({"job_id": result.get("job_id") or (spec.get("id") if isinstance(spec, dict) else None),
                        "error": result.get("error"), "detail": result.get("detail")})
    return {"ok": True, "results": results}


def _slot_full(state: State, first_ms: int | None) -> Result | None:
    if first_ms is not None and state.slots.count_at(first_ms) >= state.limits.slot_jobs_max:
        return {"error": "slot_full", "detail": f"{state.limits.slot_jobs_max} jobs already fire in the second of "
                "this job's next fire; spread the schedules or raise scheduler.slot_jobs_max"}
    return None


def _expire_idempotency_keys(state: State) -> None:
    # Keys are inserted in commit order with one TTL, so the oldest expire first.
    while state.idempotency:
        key = next(iter(state.idempotency))
        if state.idempotency[key][1] > state.now_ms:
            return
        del state.idempotency[key]


def replace_job(state: State, cmd: ReplaceJob) -> Result:
    spec, error = _revalidate(cmd.spec)
    if error:
        return error
    job_id = spec["id"]
    job, error = _job_for_write(state, job_id, cmd.if_version, cmd.actor)
    if error or (error := workflow.dependency_error(state, spec, job["team"])):
        return error
    old = job["spec"]
    timing_changed = (old["schedule"], old["timezone"], old["paused"]) != (
        spec["schedule"], spec["timezone"], spec["paused"])
    if timing_changed and (error := _slot_full(state, next_fire(spec, state.now_ms))):
        return error
    if timing_changed:
        occurrences.miss_overdue(state, job_id)
    job["spec"] = spec
    workflow.link(state, job_id, old["depends_on"], spec["depends_on"])
    job["version"] += 1
    job["updated_ms"] = state.now_ms
    if timing_changed:
        occurrences.withdraw_future_fires(state, job_id, everything=spec["paused"])
        if spec["paused"] and not old["paused"]:
            job["paused_ms"] = state.now_ms
        state.schedule_from(job_id, state.now_ms)
        if old["paused"] and not spec["paused"] and old["schedule"] == spec["schedule"]:
            occurrences.resume_misfires(state, job_id)
    _note_override(job)
    if old["depends_on"] != spec["depends_on"]:
        workflow.graph_changed(state, job_id)
    return {"ok": True, "job_id": job_id}


def _note_override(job: Job) -> None:
    """After an operator's change to a registered job (schedb.fsm.registry): a schedule other
    than the declared default is an override."""
    registration = job.get("registration")
    if registration is not None:
        schedule = job["spec"]["schedule"]
        registration["schedule_override"] = None if schedule == registration["default_schedule"] else schedule


def delete_job(state: State, cmd: DeleteJob) -> Result:
    job, error = _job_for_write(state, cmd.job_id, cmd.if_version, cmd.actor)
    if error or (error := workflow.deletion_error(state, cmd.job_id, cmd.force)):
        return error
    state.team_jobs[job["team"]] -= 1
    state.unschedule(cmd.job_id)
    for scheduled_ms in list(state.jobs[cmd.job_id]["active_fires"]):
        workflow.end_fire(state, fire_id_of(cmd.job_id, scheduled_ms), StepStatus.DELETED)
    dependents = workflow.unlink_deleted(state, cmd.job_id)
    state.book.forget_withdrawn_of(cmd.job_id)
    for fire_id in [f for f, d in state.dead_letters.items() if d["job_id"] == cmd.job_id]:
        del state.dead_letters[fire_id]
    del state.jobs[cmd.job_id]
    history.forget_job(state, cmd.job_id)
    tenancy.forget_team_if_gone(state, job["team"])
    for changed in (cmd.job_id, *dependents):
        workflow.graph_changed(state, changed)
    return {"ok": True, "job_id": cmd.job_id}


def trigger_job(state: State, cmd: TriggerJob) -> Result:
    job, error = _job_for_write(state, cmd.job_id, 0, cmd.actor)
    if error:
        return error
    if error := workflow.trigger_error(state, cmd.job_id, cmd.params, cmd.force):
        return error
    if not tenancy.take_fires(state, job["team"], 1, state.now_ms):
        return tenancy.over_quota(state, job["team"], "fires_per_minute", "the trigger was not run")
    scheduled_ms = state.unscheduled_ms(cmd.job_id)
    by = str(cmd.actor.get("key") or "api")[:64]
    fire = workflow.new_fire(state, cmd.job_id, scheduled_ms, PENDING, trigger=f"{Trigger.MANUAL}:{by}",
                             correlation_id=cmd.correlation_id, params=cmd.params)
    state.counters["triggered"] += 1
    return {"ok": True, "fire_id": fire["fire_id"]}


def backfill_job(state: State, cmd: BackfillJob) -> Result:
    """Pending fires for the job's occurrences in [start_ms, end_ms], each with its natural fire id."""
    job = state.jobs.get(cmd.job_id) if isinstance(cmd.job_id, str) else None
    if job is None or not tenancy.can_touch(cmd.actor, job):
        return {"error": "not_found", "detail": f"job {cmd.job_id!r} does not exist"}
    if not (isinstance(cmd.start_ms, int) and isinstance(cmd.end_ms, int)) or cmd.start_ms > cmd.end_ms:
        return {"error": "invalid", "detail": "start must not be after end",
                "errors": [{"field": "start", "message": "must not be after end"}]}
    if job["spec"]["schedule"] is None:
        return {"error": "invalid", "detail": "the job has no schedule (it runs after its upstreams)",
                "errors": [{"field": "schedule", "message": "none to backfill"}]}
    instants, error = _occurrences_between(job, cmd.start_ms, cmd.end_ms)
    if error:
        return error
    fresh = [ms for ms in instants if fire_id_of(cmd.job_id, ms) not in state.book.fires]
    if not occurrences.backfill_fits(job, fresh):
        message = (f"the job already holds occurrences that backfills ran and its schedule has not reached; "
                   f"with these it would be more than {occurrences.BACKFILLED_MAX}: resume it or wait")
        return {"error": "invalid", "detail": message, "errors": [{"field": "end", "message": message}]}
    if not tenancy.take_fires(state, job["team"], len(fresh), state.now_ms):
        return tenancy.over_quota(state, job["team"], "fires_per_minute", f"the backfill holds {len(fresh)} fires")
    created = [workflow.new_fire(state, cmd.job_id, ms, PENDING, trigger=Trigger.BACKFILL,
                                 correlation_id=cmd.correlation_id)["fire_id"] for ms in fresh]
    occurrences.note_backfilled(job, fresh)
    state.counters["backfilled"] += len(created)
    return {"ok": True, "fires": len(created), "fire_ids": created[:10],
            "already_active": len(instants) - len(created)}


def _occurrences_between(job: Job, start_ms: int, end_ms: int) -> tuple[list[int], Result | None]:
    schedule = parse_schedule(job["spec"]["schedule"], job["spec"]["timezone"])
    instants: list[int] = []
    next_ms = schedule.next_after(start_ms - 1)
    while next_ms is not None and next_ms <= end_ms:
        if len(instants) == BACKFILL_FIRES_MAX:
            message = f"at most {BACKFILL_FIRES_MAX} occurrences per backfill"
            return [], {"error": "invalid", "detail": f"the range holds more than {BACKFILL_FIRES_MAX} occurrences",
                        "errors": [{"field": "end", "message": message}]}
        instants.append(next_ms)
        next_ms = schedule.next_after(next_ms)
    return instants, None


def _job_for_write(state: State, job_id: Any, if_version: Any, actor: dict[str, Any]) -> tuple[Job, Result | None]:
    """The job a command changes; another team's job does not exist for the actor."""
    job = state.jobs.get(job_id) if isinstance(job_id, str) else None
    if job is None or not tenancy.can_touch(actor, job):
        return cast(Job, {}), {"error": "not_found", "detail": f"job {job_id!r} does not exist"}
    if if_version and if_version != job["version"]:
        return job, {"error": "precondition_failed",
                     "detail": f"job {job_id!r} is at version {job['version']}, not {if_version}"}
    return job, None


def _revalidate(spec: Any) -> tuple[dict[str, Any], Result | None]:
    try:
        return validate_job(spec), None
    except InvalidJob as exc:
        return {}, {"error": "invalid", "detail": str(exc), "errors": exc.errors}
