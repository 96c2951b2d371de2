"""The replicated state machine: jobs, time slots, fires, history, dead letters.

Rules (the contract with raft.py, as in hashicorp/raft's FSM):
- `apply(command)` is deterministic: no clock, no randomness, no I/O, no logging.
  Time enters only as `command.now_ms`. Replicated time (`now_ms`) is the
  leader's: only its AssignFires advance it, never backwards; another node's
  clock is an input that cannot move it (see schedb.replicated_time).
- A bad command is rejected with the same result on every node and changes
  nothing. Results are plain dicts: {"ok": True, ...} or {"error": code, ...}.
- Everything is bounded: history per job, recent executions, dead letters,
  idempotency keys, fires per command.

This module holds the jobs and their handlers; the life of a fire (assign,
complete, retry, dead letter) is in lifecycle.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack

from schedb import history, lifecycle, limits, misfire, registry, tenancy, workflow
from schedb.commands import (
    AssignFires,
    BackfillJob,
    Command,
    CompleteFires,
    CreateApiKey,
    CreateJob,
    CreateJobs,
    DeleteJob,
    DeleteSecret,
    DrainNode,
    DropDeadLetter,
    PutSecret,
    RegisterJobs,
    RegisterNode,
    ReplaceJob,
    ReplayDeadLetter,
    RevokeApiKey,
    SetDefaultQuotas,
    SetLimits,
    SetQuotas,
    TriggerJob,
)
from schedb.fires import PENDING, FireBook, fire_id_of
from schedb.jobspec import InvalidJob, validate_job
from schedb.limits import StateLimits
from schedb.replicated_time import command_time
from schedb.schedule import parse_schedule
from schedb.slots import SlotIndex

IDEMPOTENCY_KEY_LEN_MAX = 200
CORRELATION_ID_LEN_MAX = 128
Result = dict[str, Any]


class State:
    def __init__(self, limits: StateLimits | None = None) -> None:
        self.limits = limits or StateLimits()
        self.now_ms = 0
        # Off until the first AssignFires of a leader of this version (it names itself): a log
        # written before replicated time was the leader's replays as it applied then (schedb.replicated_time).
        self.leader_clock = False
        self.applied = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.slots = SlotIndex()
        self.book = FireBook()
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.limits.recent_executions)
        self.dead_letters: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, tuple[str, int]] = {}  # "team\0key" -> (job_id, expires_ms)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("commands_rejected", "fires_assigned", "assign_stale", "fires_reassigned", "outcomes_committed",
             "duplicate_completions", "retries_scheduled", "dead_lettered", "dead_letters_evicted",
             "fires_missed", "fires_skipped", "at_most_once_abandoned", "triggered", "backfilled", "replayed",
             "idempotent_replays", "fires_throttled", "quota_refusals", "dependency_fires", "upstream_failed"), 0)
        tenancy.init_state(self)
        workflow.init_state(self)
        history.init_state(self)
        misfire.init_state(self)

    def __setstate__(self, data: dict[str, Any]) -> None:
        """A snapshot of an older version lacks newer fields: its limits get the defaults of
        the bounds they lack, and the teams' fields are filled in (tenancy.upgrade)."""
        self.__dict__.update(data)
        self.__dict__.setdefault("leader_clock", False)
        known = {f.name for f in fields(StateLimits)}
        self.limits = StateLimits(**{k: v for k, v in vars(self.limits).items() if k in known})
        tenancy.upgrade(self)
        workflow.upgrade(self)
        history.upgrade(self)
        misfire.init_state(self)

    # -- the one entry point -------------------------------------------------

    def apply(self, command: Command) -> Result:
        self.applied += 1
        if not isinstance(command.now_ms, int) or isinstance(command.now_ms, bool) or \
                not isinstance(command.actor, dict):
            self.counters["commands_rejected"] += 1
            return {"error": "invalid", "detail": "now_ms must be an integer and actor an object"}
        if isinstance(command, AssignFires) and command.leader_id:
            self.leader_clock = True
        result = self._apply_at(command, command_time(command, self.now_ms, self.leader_clock))
        if "error" in result:
            self.counters["commands_rejected"] += 1
            self.counters["quota_refusals"] += result["error"] == "quota"
        if command.actor:
            tenancy.audit(self, command, result)
        return result

    def _apply_at(self, command: Command, now_ms: int) -> Result:
        """Run the command's handler at `now_ms`. Only the leader's AssignFires moves replicated
        time for good; any other command sees its own time only while it is applied."""
        if isinstance(command, AssignFires) or not self.leader_clock:
            self.now_ms = now_ms
            return _HANDLERS[type(command)](self, command)
        replicated_ms, self.now_ms = self.now_ms, now_ms
        try:
            return _HANDLERS[type(command)](self, command)
        finally:
            self.now_ms = replicated_ms

    # -- reads (callers hold the lock that serializes them with apply) --------

    def due_jobs(self, until_ms: int, limit: int, from_ms: int | None = None) -> list[tuple[str, int]]:
        """(job_id, next_fire_ms) of jobs whose next fire is at or before until_ms (and at or
        after from_ms, when given), earliest first."""
        out: list[tuple[str, int]] = []
        for job_id in self.slots.up_to(until_ms, from_ms):
            next_ms = self.jobs[job_id]["next_fire_ms"]
            if next_ms <= until_ms and (from_ms is None or next_ms >= from_ms):
                out.append((job_id, next_ms))
                if len(out) >= limit:
                    break
        return out

    def fire_changes(self, node_id: str, since: int) -> tuple[int, bool, dict[str, dict[str, Any] | None]]:
        """What changed in node_id's fires after version `since`: (version now, whether this is
        the full set, {fire_id: a copy of the fire if node_id holds it, else None})."""
        book = self.book
        ids = book.touched_since(node_id, since)
        full = ids is None
        out: dict[str, dict[str, Any] | None] = {}
        for fire_id in book.by_node.get(node_id, {}) if ids is None else ids:
            fire = book.fires.get(fire_id)
            out[fire_id] = dict(fire) if fire is not None and fire["node"] == node_id else None
        return book.version_of(node_id), full, out

    def canonical_bytes(self) -> bytes:
        """A byte-exact rendering of the whole state, for determinism checks."""
        return msgpack.packb(
            [self.now_ms, self.leader_clock, self.applied, self.jobs, self.slots.to_canonical(),
             self.book.to_canonical(),
             {k: list(v) for k, v in self.history.items()}, list(self.recent), self.dead_letters,
             self.idempotency, self.nodes, self.counters, self.api_keys, self.quotas, self.secrets, self.usage,
             self.fire_windows, self.team_jobs, list(self.audit), self.default_quotas, self.dependents, self.runs,
             history.to_canonical(self), self.catch_up_work],
            use_bin_type=True,
        )

    # -- job handlers --------------------------------------------------------------

    def create_job(self, cmd: CreateJob) -> Result:
        key = cmd.idempotency_key
        if not isinstance(key, str) or len(key) > IDEMPOTENCY_KEY_LEN_MAX:
            return {"error": "invalid", "detail": f"idempotency key must be at most {IDEMPOTENCY_KEY_LEN_MAX} chars"}
        team = cmd.team or tenancy.DEFAULT_TEAM
        if not tenancy.valid_team(team):
            return {"error": "invalid", "detail": "team: not a valid team name"}
        self._expire_idempotency_keys()
        key = f"{team}\0{key}" if key else ""  # one team's key says nothing about another's jobs
        if key and key in self.idempotency and self.idempotency[key][0] in self.jobs:
            self.counters["idempotent_replays"] += 1
            return {"ok": True, "job_id": self.idempotency[key][0], "replayed": True}
        spec, error = _revalidate(cmd.spec)
        if error:
            return error
        if error := tenancy.create_refusal(self, cmd.actor, team):
            return error
        job_id = spec["id"]
        if job_id in self.jobs:
            return {"error": "conflict", "detail": f"job {job_id!r} already exists"}
        if error := workflow.dependency_error(self, spec, team):
            return error
        first_ms = _next_fire(spec, self.now_ms)
        if error := self._slot_full(first_ms):
            return error
        self.jobs[job_id] = {"spec": spec, "created_ms": self.now_ms, "updated_ms": self.now_ms,
                             "version": 1, "next_fire_ms": None, "active_fires": [], "team": team,
                             "paused_ms": self.now_ms if spec["paused"] else None}
        self.team_jobs[team] = self.team_jobs.get(team, 0) + 1
        workflow.link(self, job_id, [], spec["depends_on"])
        self.place(job_id, first_ms)
        if key:
            self.idempotency[key] = (job_id, self.now_ms + self.limits.idempotency_ttl_ms)
            while len(self.idempotency) > self.limits.idempotency_keys_max:
                del self.idempotency[next(iter(self.idempotency))]
        return {"ok": True, "job_id": job_id}

    def _create_jobs(self, cmd: CreateJobs) -> Result:
        if not isinstance(cmd.specs, list) or len(cmd.specs) > self.limits.bulk_create_max:
            return {"error": "invalid", "detail": f"specs must be a list of at most {self.limits.bulk_create_max}"}
        results = []
        for spec in cmd.specs:
            result = self.create_job(CreateJob(cmd.now_ms, spec, team=cmd.team, actor=cmd.actor))
            results.append({"job_id": result.get("job_id") or (spec.get("id") if isinstance(spec, dict) else None),
                            "error": result.get("error"), "detail": result.get("detail")})
        return {"ok": True, "results": results}

    def _slot_full(self, first_ms: int | None) -> Result | None:
        if first_ms is not None and self.slots.count_at(first_ms) >= self.limits.slot_jobs_max:
            return {"error": "slot_full", "detail": f"{self.limits.slot_jobs_max} jobs already fire in the second of "
                    "this job's next fire; spread the schedules or raise scheduler.slot_jobs_max"}
        return None

    def _expire_idempotency_keys(self) -> None:
        # Keys are inserted in commit order with one TTL, so the oldest expire first.
        while self.idempotency:
            key = next(iter(self.idempotency))
            if self.idempotency[key][1] > self.now_ms:
                return
            del self.idempotency[key]

    def replace_job(self, cmd: ReplaceJob) -> Result:
        spec, error = _revalidate(cmd.spec)
        if error:
            return error
        job_id = spec["id"]
        job, error = self._job_for_write(job_id, cmd.if_version, cmd.actor)
        if error or (error := workflow.dependency_error(self, spec, job["team"])):
            return error
        old = job["spec"]
        timing_changed = (old["schedule"], old["timezone"], old["paused"]) != (
            spec["schedule"], spec["timezone"], spec["paused"])
        if timing_changed and (error := self._slot_full(_next_fire(spec, self.now_ms))):
            return error
        job["spec"] = spec
        workflow.link(self, job_id, old["depends_on"], spec["depends_on"])
        job["version"] += 1
        job["updated_ms"] = self.now_ms
        if timing_changed:
            lifecycle.withdraw_future_fires(self, job_id, everything=spec["paused"])
            if spec["paused"] and not old["paused"]:
                job["paused_ms"] = self.now_ms
            self.schedule_from(job_id, self.now_ms)
            if old["paused"] and not spec["paused"] and old["schedule"] == spec["schedule"]:
                lifecycle.resume_misfires(self, job_id)
        registry.note_override(job)
        if old["depends_on"] != spec["depends_on"]:
            workflow.graph_changed(self, job_id)
        return {"ok": True, "job_id": job_id}

    def _delete_job(self, cmd: DeleteJob) -> Result:
        job, error = self._job_for_write(cmd.job_id, cmd.if_version, cmd.actor)
        if error or (error := workflow.deletion_error(self, cmd.job_id, cmd.force)):
            return error
        self.team_jobs[job["team"]] -= 1
        self._unschedule(cmd.job_id)
        for scheduled_ms in list(self.jobs[cmd.job_id]["active_fires"]):
            self.end_fire(fire_id_of(cmd.job_id, scheduled_ms), "deleted")
        dependents = workflow.unlink_deleted(self, cmd.job_id)
        self.book.forget_withdrawn_of(cmd.job_id)
        for fire_id in [f for f, d in self.dead_letters.items() if d["job_id"] == cmd.job_id]:
            del self.dead_letters[fire_id]
        del self.jobs[cmd.job_id]
        history.forget_job(self, cmd.job_id)
        tenancy.forget_team_if_gone(self, job["team"])
        for changed in (cmd.job_id, *dependents):
            workflow.graph_changed(self, changed)
        return {"ok": True, "job_id": cmd.job_id}

    def _trigger_job(self, cmd: TriggerJob) -> Result:
        job, error = self._job_for_write(cmd.job_id, 0, cmd.actor)
        if error:
            return error
        if error := workflow.trigger_error(self, cmd.job_id, cmd.params, cmd.force):
            return error
        if not tenancy.take_fires(self, job["team"], 1, self.now_ms):
            return tenancy.over_quota(self, job["team"], "fires_per_minute", "the trigger was not run")
        scheduled_ms = self.now_ms
        while fire_id_of(cmd.job_id, scheduled_ms) in self.book.fires:  # two triggers in one ms
            scheduled_ms += 1
        by = str(cmd.actor.get("key") or "api")[:64]
        fire = self.new_fire(cmd.job_id, scheduled_ms, PENDING, trigger=f"manual:{by}",
                             correlation_id=cmd.correlation_id, params=cmd.params)
        self.counters["triggered"] += 1
        return {"ok": True, "fire_id": fire["fire_id"]}

    # -- helpers used here and by lifecycle.py -----------------------------------

    def new_fire(self, job_id: str, scheduled_ms: int, node: str, *, trigger: str, attempt: int = 1,
                 correlation_id: Any = "", run_id: str = "", params: dict[str, Any] | None = None) -> dict[str, Any]:
        """trigger: schedule, manual:<key>, replay, backfill or dependency:<run id>.

        A fire taken back earlier (pause, reschedule) with the same id comes back to life here:
        its webhook may have started, so the new fire continues its attempt numbers and knows
        what was reported. One fire id is one fire, whatever happened to it in between."""
        fire_id = fire_id_of(job_id, scheduled_ms)
        reported: list[int] = []
        twin = self.book.withdrawn.pop(fire_id, None)
        if twin is not None:
            attempt = max(attempt, twin["attempt"] + 1)
            reported = list(twin["reported"])
        fire = {"fire_id": fire_id, "job_id": job_id, "scheduled_ms": scheduled_ms,
                "attempt": attempt, "attempt_base": attempt - 1, "node": node, "assigned_ms": self.now_ms,
                "due_ms": scheduled_ms if trigger == "schedule" else max(scheduled_ms, self.now_ms),
                "lease_end_ms": 0, "reported": reported, "trigger": trigger, "run_id": run_id,
                "correlation_id": str(correlation_id)[:CORRELATION_ID_LEN_MAX]}
        if params:
            fire["params"] = params
        self.set_lease(fire)
        self.book.add(fire)
        self.jobs[job_id]["active_fires"].append(scheduled_ms)
        tenancy.usage_of(self, self.jobs[job_id]["team"])["fires"] += 1
        workflow.fire_created(self, fire)
        return fire

    def set_lease(self, fire: dict[str, Any]) -> None:
        timeout_ms = int(self.jobs[fire["job_id"]]["spec"]["webhook"]["timeout_s"] * 1000)
        fire["lease_end_ms"] = max(fire["due_ms"], self.now_ms) + timeout_ms + self.limits.lease_grace_ms

    def end_fire(self, fire_id: str, result: str) -> None:
        """result: succeeded, failed, skipped or deleted (what a workflow step made of it)."""
        fire = self.book.end(fire_id)
        self.jobs[fire["job_id"]]["active_fires"].remove(fire["scheduled_ms"])
        workflow.fire_ended(self, fire, result)

    def _job_for_write(self, job_id: Any, if_version: Any,
                       actor: dict[str, Any]) -> tuple[dict[str, Any], Result | None]:
        """The job a command changes; another team's job does not exist for the actor."""
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or not tenancy.can_touch(actor, job):
            return {}, {"error": "not_found", "detail": f"job {job_id!r} does not exist"}
        if if_version and if_version != job["version"]:
            return job, {"error": "precondition_failed",
                         "detail": f"job {job_id!r} is at version {job['version']}, not {if_version}"}
        return job, None

    def schedule_from(self, job_id: str, after_ms: int) -> None:
        """Move the job to the slot of its first occurrence after after_ms (out of any slot
        when paused). An occurrence in the past stays there: the dispatcher's assign
        applies the misfire policy."""
        self.place(job_id, _next_fire(self.jobs[job_id]["spec"], after_ms))

    def place(self, job_id: str, next_ms: int | None) -> None:
        """Put the job in the slot of next_ms. An occurrence already decided (fired, missed or
        throttled: lifecycle.decide) is never placed again, so a resume or a reschedule cannot
        fire it twice; only a fire taken back before it started (withdrawn) may come back."""
        self._unschedule(job_id)
        job = self.jobs[job_id]
        decided_ms = job.get("decided_ms")
        if next_ms is not None and decided_ms is not None and next_ms <= decided_ms and \
                fire_id_of(job_id, next_ms) not in self.book.withdrawn:
            next_ms = _next_fire(job["spec"], decided_ms)
        job["next_fire_ms"] = next_ms
        if next_ms is not None:
            self.slots.add(job_id, next_ms)

    def _unschedule(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["next_fire_ms"] is not None:
            self.slots.remove(job_id, job["next_fire_ms"])
            job["next_fire_ms"] = None

def _next_fire(spec: dict[str, Any], after_ms: int) -> int | None:
    """A job's first fire after after_ms, or None (paused, or a schedule with no fire left)."""
    if spec["paused"] or spec["schedule"] is None:  # None: it runs only after its upstreams
        return None
    return parse_schedule(spec["schedule"], spec["timezone"]).next_after(after_ms)


def _revalidate(spec: Any) -> tuple[dict[str, Any], Result | None]:
    try:
        return validate_job(spec), None
    except InvalidJob as exc:
        return {}, {"error": "invalid", "detail": str(exc), "errors": exc.errors}


_HANDLERS: dict[type[Command], Callable[[State, Any], Result]] = {
    RegisterNode: lifecycle.register_node,
    DrainNode: lifecycle.drain_node,
    CreateJob: State.create_job,
    CreateJobs: State._create_jobs,
    ReplaceJob: State.replace_job,
    DeleteJob: State._delete_job,
    TriggerJob: State._trigger_job,
    AssignFires: lifecycle.assign_fires,
    CompleteFires: lifecycle.complete_fires,
    ReplayDeadLetter: lifecycle.replay_dead_letter,
    DropDeadLetter: lifecycle.drop_dead_letter,
    BackfillJob: lifecycle.backfill_job,
    CreateApiKey: tenancy.create_api_key,
    RevokeApiKey: tenancy.revoke_api_key,
    SetQuotas: tenancy.set_quotas,
    SetDefaultQuotas: tenancy.set_default_quotas,
    SetLimits: limits.set_limits,
    RegisterJobs: registry.register_jobs,
    PutSecret: tenancy.put_secret,
    DeleteSecret: tenancy.delete_secret,
}
