"""AssignFires inside the replicated state: the leader's dispatcher hands out fires.

- An item is a job's next occurrence from its slot: it becomes a fire on the named node
  (unless the misfire policy skips it, or the team is over its fires-per-minute quota).
- A reassign moves an existing fire (pending, or held by an executor that died or whose
  lease ended) to a node; moving a fire an executor already held starts a new attempt,
  except for an at-most-once fire that may have been delivered: that one is dead-lettered.
- A release moves a fire its holder never started, as the same attempt.
The leader's AssignFires is also what moves replicated time (schedb.fsm.replicated_time).
"""

from __future__ import annotations

from typing import Any

from schedb.commands import AssignFires
from schedb.fsm import dead_letters, history, tenancy, workflow
from schedb.fsm.core import State
from schedb.fsm.fires import PENDING, fire_id_of
from schedb.fsm.model import ExecutionStatus, Reason, Result, Trigger
from schedb.fsm.occurrences import apply_misfire_policy, backfilled, decide


def assign_fires(state: State, cmd: AssignFires) -> Result:
    batch = state.limits.assign_batch_max
    if not (isinstance(cmd.items, list) and isinstance(cmd.reassign, list) and isinstance(cmd.release, list)) or \
            len(cmd.items) + len(cmd.reassign) + len(cmd.release) > batch:
        return {"error": "invalid", "detail": "items must be lists within the batch bound"}
    outcomes = [_assign_one(state, item) for item in cmd.items]
    released = [item for item in cmd.release if _release_one(state, cmd.leader_id, item)]
    moved = [item for item in cmd.reassign if _reassign_one(state, item)]
    created = [item for item, outcome in zip(cmd.items, outcomes, strict=True) if outcome == "assigned"]
    state.counters["fires_assigned"] += len(created)
    state.counters["assign_stale"] += outcomes.count("stale") + len(cmd.reassign) - len(moved) + len(cmd.release) \
        - len(released)
    # Fires each node was given (its own new fires, and those moved to it): the leader's
    # admission control counts them (schedb.admission).
    given: dict[str, int] = {}
    for item in [*created, *moved, *released]:
        given[item[2]] = given.get(item[2], 0) + 1
    return {"ok": True, "assigned": len(created), "reassigned": len(moved) + len(released),
            "throttled": outcomes.count("throttled"), "given": given}


def _release_one(state: State, leader_id: str, item: Any) -> bool:
    """A fire its holder never started goes to another node as the same attempt: nothing was
    delivered, so even an at-most-once fire may still run. The holder is the new leader itself
    (it held the fire as a follower), or a silent follower named in the item, whose fence had
    closed before the fire fell due (the leader's judgement: schedb.dispatcher)."""
    if not (isinstance(item, list) and len(item) in (3, 4)):
        return False
    fire_id, attempt, node_id = item[:3]
    holder = item[3] if len(item) == 4 else leader_id
    fire = state.book.get(fire_id) if isinstance(fire_id, str) else None
    if fire is None or not holder or fire["node"] != holder or fire["attempt"] != attempt:
        return False
    if node_id not in state.nodes or node_id == holder:
        return False
    state.book.move(fire, node_id)
    fire["assigned_ms"] = state.now_ms
    state.set_lease(fire)
    return True


def _assign_one(state: State, item: Any) -> str:
    """The next occurrence of a job from its slot: "assigned", "missed" (the misfire
    policy said no), "throttled", or "stale" (no change: the item no longer matches the state)."""
    if not (isinstance(item, list) and len(item) == 3):
        return "stale"
    job_id, scheduled_ms, node_id = item
    job = state.jobs.get(job_id) if isinstance(job_id, str) else None
    if job is None or job["next_fire_ms"] != scheduled_ms or node_id not in state.nodes:
        return "stale"
    fire_id = fire_id_of(job_id, scheduled_ms)
    if backfilled(job, scheduled_ms) and fire_id not in state.book.fires and fire_id not in state.book.withdrawn:
        # A backfill fired this occurrence (while the job was paused, or ahead of its slot) and
        # its fire ended: it was the occurrence's fire, so the schedule goes on after it.
        decide(job, scheduled_ms)
        state.schedule_from(job_id, scheduled_ms)
        return "stale"
    if scheduled_ms < state.now_ms - state.limits.misfire_grace_ms:
        if not state.may_catch_up():  # this command's catch-up work is spent: the leader sends it again
            state.counters["catch_ups_deferred"] += 1
            return "stale"
        next_ms = apply_misfire_policy(state, job_id, scheduled_ms, Reason.MISSED)
        if next_ms != scheduled_ms:
            # What the policy skipped is decided; never past now (a later schedule edit must
            # not lose the new schedule's occurrences).
            decide(job, min(next_ms - 1, state.now_ms) if next_ms is not None else scheduled_ms)
            state.place(job_id, next_ms)
            return "missed"
    if scheduled_ms <= (job.get("decided_ms") or -1) and fire_id not in state.book.fires \
            and fire_id not in state.book.withdrawn:
        # Placed again while withdrawn, and decided since (its old attempt ran after all,
        # complete_fires): no second fire for it. Any other placement is after decided_ms.
        state.schedule_from(job_id, scheduled_ms)
        return "stale"
    decide(job, scheduled_ms)
    created = fire_id not in state.book.fires  # a trigger may own this instant
    if created and not tenancy.take_fires(state, job["team"], 1, scheduled_ms):
        _throttle(state, job_id, scheduled_ms)
        return "throttled"
    if created:
        workflow.new_fire(state, job_id, scheduled_ms, node_id, trigger=Trigger.SCHEDULE)
    state.schedule_from(job_id, scheduled_ms)
    return "assigned" if created else "stale"


def _throttle(state: State, job_id: str, scheduled_ms: int) -> None:
    """An occurrence over its team's fires-per-minute quota is not fired, but recorded."""
    team = state.jobs[job_id]["team"]
    limit = tenancy.quota(state, team)["fires_per_minute"]
    history.record(state, job_id, scheduled_ms, 0, "", ExecutionStatus.THROTTLED, reason=Reason.FIRES_PER_MINUTE,
                   error=f"team {team!r} is over its fires_per_minute quota ({limit})")
    state.counters["fires_throttled"] += 1
    state.usage_of(team)["throttled"] += 1
    state.schedule_from(job_id, scheduled_ms)
    if state.jobs[job_id]["next_fire_ms"] is None:  # its last occurrence (a one-shot): keep it replayable
        dead_letters.dead_letter(state, fire_id_of(job_id, scheduled_ms), job_id, scheduled_ms, 0,
                                 ExecutionStatus.THROTTLED, 0, f"over the fires_per_minute quota ({limit})")


def _reassign_one(state: State, item: Any) -> bool:
    """item: [fire_id, attempt, node_id, holder], holder being the fire's node the planner saw
    (PENDING: none). A fire held by another since is stale, as is one of another attempt: moving
    it would take it from an executor the planner never judged. Items of three (logs of
    versions before the holder) name none."""
    if not (isinstance(item, list) and len(item) in (3, 4)):
        return False
    fire_id, attempt, node_id = item[:3]
    fire = state.book.get(fire_id) if isinstance(fire_id, str) else None
    if fire is None or fire["attempt"] != attempt or node_id not in state.nodes:
        return False
    if len(item) == 4 and fire["node"] != item[3]:
        return False
    if fire["node"] == node_id and fire["lease_end_ms"] >= state.now_ms:
        return False  # to its own holder only as a new attempt once the lease ended (the only executor left)
    if fire["node"] != PENDING and fire["due_ms"] <= state.now_ms and dead_letters.at_most_once(state, fire):
        # It may have been delivered: a second attempt could call the webhook twice.
        history.record(state, fire["job_id"], fire["scheduled_ms"], fire["attempt"], fire["node"],
                       ExecutionStatus.UNKNOWN, reason=Reason.EXECUTOR_LOST, trigger=fire["trigger"],
                       error="executor lost before reporting; at_most_once forbids another attempt")
        dead_letters.bury(state, fire, ExecutionStatus.UNKNOWN, 0, "executor lost before reporting")
        state.counters["at_most_once_abandoned"] += 1
        return True
    if fire["node"] != PENDING:  # the old executor may have started it: this is a new attempt
        fire["attempt"] += 1
        fire["due_ms"] = max(fire["due_ms"], state.now_ms)
        state.counters["fires_reassigned"] += 1
    state.book.move(fire, node_id)
    fire["assigned_ms"] = state.now_ms
    state.set_lease(fire)
    return True
