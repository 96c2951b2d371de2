"""The life of a fire inside the state machine: assign, complete, retry, dead letter.

Functions of (state, command), called by State.apply; the same determinism
rules hold (no clock but `command.now_ms`, no I/O).

- AssignFires creates fires from the jobs' slots, and moves existing fires
  (pending ones, or those of an executor that died or whose lease ended) to a
  node. Moving a fire an executor already held starts a new attempt.
- CompleteFires records each attempt's outcome once. A success ends the fire
  (the first success wins, even from an older attempt); a failure of the
  current attempt schedules the next one after a backoff, or moves the fire to
  the dead-letter queue when the job's attempts are used up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from schedb.commands import AssignFires, CompleteFires, DropDeadLetter, Outcome, ReplayDeadLetter, outcome_from_list
from schedb.fires import PENDING, Fire, fire_id_of
from schedb.retry import backoff_ms

if TYPE_CHECKING:
    from schedb.state import Result, State

OUTCOME_STATUSES = ("succeeded", "failed", "timed_out")
ERROR_LEN_MAX = 512


def assign_fires(state: State, cmd: AssignFires) -> Result:
    batch = state.limits.assign_batch_max
    if not (isinstance(cmd.items, list) and isinstance(cmd.reassign, list)) or \
            len(cmd.items) + len(cmd.reassign) > batch:
        return {"error": "invalid", "detail": "items must be lists within the batch bound"}
    assigned = sum(1 for item in cmd.items if _assign_one(state, item))
    moved = sum(1 for item in cmd.reassign if _reassign_one(state, item))
    state.counters["fires_assigned"] += assigned
    state.counters["assign_stale"] += len(cmd.items) + len(cmd.reassign) - assigned - moved
    return {"ok": True, "assigned": assigned, "reassigned": moved}


def _assign_one(state: State, item: Any) -> bool:
    """The next occurrence of a job from its slot; False (no change) when the item is stale."""
    if not (isinstance(item, list) and len(item) == 3):
        return False
    job_id, scheduled_ms, node_id = item
    job = state.jobs.get(job_id) if isinstance(job_id, str) else None
    if job is None or job["next_fire_ms"] != scheduled_ms or node_id not in state.nodes:
        return False
    created = fire_id_of(job_id, scheduled_ms) not in state.book.fires  # a trigger may own this instant
    if created:
        state.new_fire(job_id, scheduled_ms, node_id, trigger="schedule")
    state.schedule_next(job_id, scheduled_ms)
    return created


def _reassign_one(state: State, item: Any) -> bool:
    if not (isinstance(item, list) and len(item) == 3):
        return False
    fire_id, attempt, node_id = item
    fire = state.book.get(fire_id) if isinstance(fire_id, str) else None
    if fire is None or fire["attempt"] != attempt or node_id not in state.nodes or fire["node"] == node_id:
        return False
    if fire["node"] != PENDING:  # the old executor may have started it: this is a new attempt
        fire["attempt"] += 1
        fire["due_ms"] = max(fire["due_ms"], state.now_ms)
        state.counters["fires_reassigned"] += 1
    state.book.move(fire, node_id)
    fire["assigned_ms"] = state.now_ms
    state.set_lease(fire)
    return True


def complete_fires(state: State, cmd: CompleteFires) -> Result:
    if not isinstance(cmd.outcomes, list) or len(cmd.outcomes) > state.limits.complete_batch_max:
        return {"error": "invalid", "detail": "outcomes must be a list within the batch bound"}
    if cmd.node_id not in state.nodes:
        return {"error": "invalid", "detail": f"unknown node {cmd.node_id!r}"}
    committed = sum(1 for row in cmd.outcomes if _complete_one(state, cmd.node_id, row))
    state.counters["outcomes_committed"] += committed
    state.counters["duplicate_completions"] += len(cmd.outcomes) - committed
    return {"ok": True, "committed": committed}


def _parse_outcome(row: Any) -> Outcome | None:
    try:
        outcome = outcome_from_list(row)
    except TypeError:
        return None
    ints = (outcome.attempt, outcome.http_status, outcome.started_ms, outcome.finished_ms, outcome.retry_after_ms)
    if not isinstance(outcome.fire_id, str) or outcome.status not in OUTCOME_STATUSES:
        return None
    return outcome if all(isinstance(v, int) and not isinstance(v, bool) for v in ints) else None


def _complete_one(state: State, node_id: str, row: Any) -> bool:
    outcome = _parse_outcome(row)
    if outcome is None:
        return False
    fire = state.book.get(outcome.fire_id) or state.book.withdrawn.get(outcome.fire_id)
    if fire is None or fire["job_id"] not in state.jobs:
        return False
    if outcome.attempt in fire["reported"] or not 1 <= outcome.attempt <= fire["attempt"]:
        return False
    _record(state, fire, node_id, outcome)
    fire["reported"].append(outcome.attempt)
    if state.book.withdrawn.pop(outcome.fire_id, None) is not None:
        return True
    if outcome.status == "succeeded":
        state.end_fire(outcome.fire_id)
    elif outcome.attempt == fire["attempt"]:  # an older attempt failing changes nothing
        _retry_or_bury(state, fire, outcome)
    return True


def _record(state: State, fire: Fire, node_id: str, outcome: Outcome) -> None:
    execution = {
        "fire_id": outcome.fire_id, "job_id": fire["job_id"], "scheduled_ms": fire["scheduled_ms"],
        "attempt": outcome.attempt, "node": node_id, "status": outcome.status,
        "http_status": outcome.http_status, "started_ms": outcome.started_ms,
        "finished_ms": outcome.finished_ms, "duration_ms": max(0, outcome.finished_ms - outcome.started_ms),
        "error": str(outcome.error)[:ERROR_LEN_MAX], "committed_ms": state.now_ms, "trigger": fire["trigger"],
    }
    state.history[fire["job_id"]].append(execution)
    state.recent.append(execution)


def _retry_or_bury(state: State, fire: Fire, outcome: Outcome) -> None:
    retry = state.jobs[fire["job_id"]]["spec"]["retry"]
    if fire["attempt"] - fire["attempt_base"] < retry["max_attempts"]:
        delay_ms = backoff_ms(fire["fire_id"], fire["attempt"], retry["backoff_s"], retry["backoff_max_s"],
                              outcome.retry_after_ms)
        fire["attempt"] += 1
        fire["due_ms"] = state.now_ms + delay_ms
        state.set_lease(fire)
        state.counters["retries_scheduled"] += 1
        return
    state.dead_letters[fire["fire_id"]] = {
        "fire_id": fire["fire_id"], "job_id": fire["job_id"], "scheduled_ms": fire["scheduled_ms"],
        "attempts": fire["attempt"], "last_status": outcome.status, "last_http_status": outcome.http_status,
        "last_error": str(outcome.error)[:ERROR_LEN_MAX], "dead_ms": state.now_ms,
    }
    while len(state.dead_letters) > state.limits.dead_letters_max:
        del state.dead_letters[next(iter(state.dead_letters))]
        state.counters["dead_letters_evicted"] += 1
    state.end_fire(fire["fire_id"])
    state.counters["dead_lettered"] += 1


def replay_dead_letter(state: State, cmd: ReplayDeadLetter) -> Result:
    letter = state.dead_letters.get(cmd.fire_id) if isinstance(cmd.fire_id, str) else None
    if letter is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    if cmd.fire_id in state.book.fires:
        return {"error": "conflict", "detail": f"fire {cmd.fire_id!r} is active"}
    del state.dead_letters[cmd.fire_id]
    # A replay gets the job's full retry budget again; attempt numbers keep counting up.
    state.new_fire(letter["job_id"], letter["scheduled_ms"], PENDING, trigger="replay",
                   attempt=letter["attempts"] + 1)
    state.counters["replayed"] += 1
    return {"ok": True, "fire_id": cmd.fire_id}


def drop_dead_letter(state: State, cmd: DropDeadLetter) -> Result:
    if not isinstance(cmd.fire_id, str) or state.dead_letters.pop(cmd.fire_id, None) is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    return {"ok": True}
