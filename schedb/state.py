"""The replicated state machine: jobs, time slots, fires and execution history.

Rules (the contract with raft.py, as in hashicorp/raft's FSM):
- `apply(command)` is deterministic: no clock, no randomness, no I/O, no logging.
  Time enters only as `command.now_ms`; the state's clock is the largest
  `now_ms` seen so far, so it never goes backwards even when nodes' clocks
  disagree slightly.
- A bad command is rejected with the same result on every node and changes
  nothing. Results are plain dicts: {"ok": True, ...} or {"error": code, ...}.
- Everything is bounded: history per job, recent executions, fires per assign.

A fire is one scheduled occurrence of a job, id `<job_id>:<scheduled_ms>`.
Life of a fire: the job waits in a slot; the leader's AssignFires creates the
fire on an executor node and moves the job to its next slot; the executor's
CompleteFires records the outcome in history and ends the fire. The first
outcome committed for a (fire, attempt) wins; later ones are counted as
duplicates and ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from schedb.commands import (
    AssignFires,
    Command,
    CompleteFires,
    CreateJob,
    DeleteJob,
    RegisterNode,
    ReplaceJob,
    outcome_from_list,
)
from schedb.jobspec import InvalidJob, validate_job
from schedb.schedule import parse_schedule
from schedb.slots import SlotIndex

OUTCOME_STATUSES = ("succeeded", "failed", "timed_out")
ERROR_LEN_MAX = 512
NODE_FIELD_LEN_MAX = 128
Result = dict[str, Any]


@dataclass(frozen=True)
class StateLimits:
    """Bounds of the state; must be equal on every node of a cluster."""

    history_per_job: int = 100
    recent_executions: int = 10_000
    assign_batch_max: int = 5_000
    complete_batch_max: int = 5_000
    # A job that fell further behind than this (cluster down, overload) fires once
    # for the missed occurrences and resumes from now: the run_once misfire policy.
    misfire_grace_ms: int = 10_000
    # Fires withdrawn (pause, reschedule) while their executor may already be
    # calling the webhook: kept so that a late outcome is still recorded once.
    withdrawn_max: int = 10_000


def fire_id_of(job_id: str, scheduled_ms: int) -> str:
    return f"{job_id}:{scheduled_ms}"


class State:
    def __init__(self, limits: StateLimits | None = None) -> None:
        self.limits = limits or StateLimits()
        self.now_ms = 0
        self.applied = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.slots = SlotIndex()
        self.fires: dict[str, dict[str, Any]] = {}
        self.fires_by_node: dict[str, dict[str, None]] = {}
        self.withdrawn: dict[str, dict[str, Any]] = {}
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.limits.recent_executions)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {
            "commands_rejected": 0,
            "fires_assigned": 0,
            "assign_stale": 0,
            "outcomes_committed": 0,
            "duplicate_completions": 0,
            "misfire_catchups": 0,
        }

    # -- the one entry point -------------------------------------------------

    def apply(self, command: Command) -> Result:
        self.applied += 1
        self.now_ms = max(self.now_ms, int(command.now_ms))
        result = _HANDLERS[type(command)](self, command)
        if "error" in result:
            self.counters["commands_rejected"] += 1
        return result

    # -- reads (callers hold the lock that serializes them with apply) --------

    def due_jobs(self, until_ms: int, limit: int) -> list[tuple[str, int]]:
        """(job_id, next_fire_ms) of jobs whose next fire is at or before until_ms."""
        out: list[tuple[str, int]] = []
        for job_id in self.slots.up_to(until_ms):
            next_ms = self.jobs[job_id]["next_fire_ms"]
            if next_ms <= until_ms:
                out.append((job_id, next_ms))
                if len(out) >= limit:
                    break
        return out

    def fires_for_node(self, node_id: str) -> list[dict[str, Any]]:
        return [dict(self.fires[f]) for f in self.fires_by_node.get(node_id, {})]

    def canonical_bytes(self) -> bytes:
        """A byte-exact rendering of the whole state, for determinism checks."""
        return msgpack.packb(
            [self.now_ms, self.applied, self.jobs, self.slots.to_canonical(), self.fires,
             self.fires_by_node, self.withdrawn, {k: list(v) for k, v in self.history.items()},
             list(self.recent), self.nodes, self.counters],
            use_bin_type=True,
        )

    # -- handlers ------------------------------------------------------------

    def _register_node(self, cmd: RegisterNode) -> Result:
        for value in (cmd.node_id, cmd.raft_addr, cmd.http_addr):
            if not isinstance(value, str) or not 0 < len(value) <= NODE_FIELD_LEN_MAX:
                return {"error": "invalid", "detail": "node id and addresses must be short strings"}
        for other_id, other in self.nodes.items():
            if other["raft_addr"] == cmd.raft_addr and other_id != cmd.node_id:
                return {"error": "conflict", "detail": f"raft address already registered by {other_id}"}
        self.nodes[cmd.node_id] = {"raft_addr": cmd.raft_addr, "http_addr": cmd.http_addr,
                                   "registered_ms": self.now_ms}
        return {"ok": True}

    def _create_job(self, cmd: CreateJob) -> Result:
        spec, error = _revalidate(cmd.spec)
        if error:
            return error
        job_id = spec["id"]
        if job_id in self.jobs:
            return {"error": "conflict", "detail": f"job {job_id!r} already exists"}
        job = {"spec": spec, "created_ms": self.now_ms, "updated_ms": self.now_ms,
               "version": 1, "next_fire_ms": None, "active_fires": []}
        self.jobs[job_id] = job
        self.history[job_id] = deque(maxlen=self.limits.history_per_job)
        self._schedule_from(job_id, self.now_ms)
        return {"ok": True, "job_id": job_id}

    def _replace_job(self, cmd: ReplaceJob) -> Result:
        spec, error = _revalidate(cmd.spec)
        if error:
            return error
        job_id = spec["id"]
        job, error = self._job_for_write(job_id, cmd.if_version)
        if error:
            return error
        old = job["spec"]
        timing_changed = (old["schedule"], old["timezone"], old["paused"]) != (
            spec["schedule"], spec["timezone"], spec["paused"])
        job["spec"] = spec
        job["version"] += 1
        job["updated_ms"] = self.now_ms
        if timing_changed:
            self._unschedule(job_id)
            self._drop_future_fires(job_id)
            self._schedule_from(job_id, self.now_ms)
        return {"ok": True, "job_id": job_id}

    def _delete_job(self, cmd: DeleteJob) -> Result:
        _, error = self._job_for_write(cmd.job_id, cmd.if_version)
        if error:
            return error
        self._unschedule(cmd.job_id)
        for scheduled_ms in list(self.jobs[cmd.job_id]["active_fires"]):
            self._end_fire(fire_id_of(cmd.job_id, scheduled_ms))
        for fire_id in [f for f, fire in self.withdrawn.items() if fire["job_id"] == cmd.job_id]:
            del self.withdrawn[fire_id]
        del self.jobs[cmd.job_id]
        del self.history[cmd.job_id]
        return {"ok": True, "job_id": cmd.job_id}

    def _assign_fires(self, cmd: AssignFires) -> Result:
        if not isinstance(cmd.items, list) or len(cmd.items) > self.limits.assign_batch_max:
            return {"error": "invalid", "detail": "items must be a list within the batch bound"}
        assigned = 0
        for item in cmd.items:
            if self._assign_one(item):
                assigned += 1
            else:
                self.counters["assign_stale"] += 1
        self.counters["fires_assigned"] += assigned
        return {"ok": True, "assigned": assigned}

    def _assign_one(self, item: Any) -> bool:
        """Create one fire; False (and no change) when the item no longer matches the state."""
        if not (isinstance(item, list) and len(item) == 3):
            return False
        job_id, scheduled_ms, node_id = item
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or job["next_fire_ms"] != scheduled_ms or node_id not in self.nodes:
            return False
        fire_id = fire_id_of(job_id, scheduled_ms)
        if fire_id in self.fires:
            return False
        self.fires[fire_id] = {"fire_id": fire_id, "job_id": job_id, "scheduled_ms": scheduled_ms,
                               "attempt": 1, "node": node_id, "assigned_ms": self.now_ms}
        self.fires_by_node.setdefault(node_id, {})[fire_id] = None
        job["active_fires"].append(scheduled_ms)
        self._unschedule(job_id)
        self._schedule_from(job_id, scheduled_ms)
        return True

    def _complete_fires(self, cmd: CompleteFires) -> Result:
        if not isinstance(cmd.outcomes, list) or len(cmd.outcomes) > self.limits.complete_batch_max:
            return {"error": "invalid", "detail": "outcomes must be a list within the batch bound"}
        if cmd.node_id not in self.nodes:
            return {"error": "invalid", "detail": f"unknown node {cmd.node_id!r}"}
        committed = 0
        for row in cmd.outcomes:
            if self._complete_one(cmd.node_id, row):
                committed += 1
            else:
                self.counters["duplicate_completions"] += 1
        self.counters["outcomes_committed"] += committed
        return {"ok": True, "committed": committed}

    def _complete_one(self, node_id: str, row: Any) -> bool:
        try:
            outcome = outcome_from_list(row)
        except TypeError:
            return False
        if not isinstance(outcome.fire_id, str) or outcome.status not in OUTCOME_STATUSES:
            return False
        if not all(isinstance(v, int) for v in (outcome.http_status, outcome.started_ms, outcome.finished_ms)):
            return False
        fire = self.fires.get(outcome.fire_id) or self.withdrawn.get(outcome.fire_id)
        if fire is None or fire["attempt"] != outcome.attempt or fire["job_id"] not in self.jobs:
            return False
        execution = {
            "fire_id": outcome.fire_id, "job_id": fire["job_id"], "scheduled_ms": fire["scheduled_ms"],
            "attempt": outcome.attempt, "node": node_id, "status": outcome.status,
            "http_status": outcome.http_status, "started_ms": outcome.started_ms,
            "finished_ms": outcome.finished_ms,
            "duration_ms": max(0, outcome.finished_ms - outcome.started_ms),
            "error": str(outcome.error)[:ERROR_LEN_MAX], "committed_ms": self.now_ms,
        }
        self.history[fire["job_id"]].append(execution)
        self.recent.append(execution)
        if self.withdrawn.pop(outcome.fire_id, None) is None:
            self._end_fire(outcome.fire_id)
        return True

    # -- helpers ---------------------------------------------------------------

    def _job_for_write(self, job_id: Any, if_version: Any) -> tuple[dict[str, Any], Result | None]:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            return {}, {"error": "not_found", "detail": f"job {job_id!r} does not exist"}
        if if_version and if_version != job["version"]:
            return job, {"error": "precondition_failed",
                         "detail": f"job {job_id!r} is at version {job['version']}, not {if_version}"}
        return job, None

    def _schedule_from(self, job_id: str, after_ms: int) -> None:
        """Put the job in the slot of its first occurrence after after_ms (run_once catch-up)."""
        job = self.jobs[job_id]
        spec = job["spec"]
        if spec["paused"]:
            job["next_fire_ms"] = None
            return
        schedule = parse_schedule(spec["schedule"], spec["timezone"])
        next_ms = schedule.next_after(after_ms)
        if next_ms is not None and next_ms < self.now_ms - self.limits.misfire_grace_ms:
            self.counters["misfire_catchups"] += 1
            next_ms = schedule.next_after(self.now_ms)
        job["next_fire_ms"] = next_ms
        if next_ms is not None:
            self.slots.add(job_id, next_ms)

    def _unschedule(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["next_fire_ms"] is not None:
            self.slots.remove(job_id, job["next_fire_ms"])
            job["next_fire_ms"] = None

    def _drop_future_fires(self, job_id: str) -> None:
        """A paused or rescheduled job keeps no fire that is not due yet."""
        for scheduled_ms in list(self.jobs[job_id]["active_fires"]):
            if scheduled_ms > self.now_ms:
                fire_id = fire_id_of(job_id, scheduled_ms)
                self.withdrawn[fire_id] = self.fires[fire_id]
                self._end_fire(fire_id)
        while len(self.withdrawn) > self.limits.withdrawn_max:
            del self.withdrawn[next(iter(self.withdrawn))]

    def _end_fire(self, fire_id: str) -> None:
        fire = self.fires.pop(fire_id)
        self.jobs[fire["job_id"]]["active_fires"].remove(fire["scheduled_ms"])
        by_node = self.fires_by_node[fire["node"]]
        del by_node[fire_id]
        if not by_node:
            del self.fires_by_node[fire["node"]]


def _revalidate(spec: Any) -> tuple[dict[str, Any], Result | None]:
    try:
        return validate_job(spec), None
    except InvalidJob as exc:
        return {}, {"error": "invalid", "detail": str(exc), "errors": exc.errors}


_HANDLERS: dict[type[Command], Callable[[State, Any], Result]] = {
    RegisterNode: State._register_node,
    CreateJob: State._create_job,
    ReplaceJob: State._replace_job,
    DeleteJob: State._delete_job,
    AssignFires: State._assign_fires,
    CompleteFires: State._complete_fires,
}
