"""CompleteFires inside the replicated state: executors report each attempt's outcome.

Each attempt's outcome is recorded once. A success ends the fire (the first success wins,
even from an older attempt); a failure of the current attempt schedules the next one after
a backoff (schedb.retry), or moves the fire to the dead-letter queue when the job's attempts
are used up; a skip (the job's concurrency or misfire policy, schedb.policies) ends it. An
outcome of a fire taken back (withdrawn) is still recorded, once, and so is the late outcome
of an earlier attempt of a fire that ended without a success (ended): a late success was a
delivery after all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from schedb.commands import CompleteFires, Outcome, outcome_from_list
from schedb.fsm import dead_letters, history, workflow
from schedb.fsm.core import State
from schedb.fsm.model import (
    CALLED_STATUSES,
    OUTCOME_STATUSES,
    SKIP_REASONS,
    ExecutionStatus,
    Fire,
    Reason,
    Result,
    StepStatus,
    Trigger,
)
from schedb.fsm.occurrences import decide
from schedb.report import clean_report
from schedb.retry import backoff_ms


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
    ints = (outcome.attempt, outcome.http_status, outcome.started_ms, outcome.finished_ms, outcome.retry_after_ms,
            outcome.bytes_sent)
    if not isinstance(outcome.fire_id, str) or outcome.status not in OUTCOME_STATUSES:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        return None
    return replace(outcome, report=clean_report(outcome.report))  # a bad report is none, not a bad outcome


def _complete_one(state: State, node_id: str, row: Any) -> bool:
    outcome = _parse_outcome(row)
    if outcome is None:
        return False
    book = state.book
    fire = book.get(outcome.fire_id) or book.withdrawn.get(outcome.fire_id) or book.ended.get(outcome.fire_id)
    if fire is None or fire["job_id"] not in state.jobs:
        return False
    if outcome.attempt in fire["reported"] or not 1 <= outcome.attempt <= fire["attempt"]:
        return False
    history.record(state, fire["job_id"], fire["scheduled_ms"], outcome.attempt, node_id, outcome.status,
                   http_status=outcome.http_status, started_ms=outcome.started_ms, finished_ms=outcome.finished_ms,
                   error=outcome.error, reason=_skip_reason(outcome), trigger=fire["trigger"], report=outcome.report)
    fire["reported"].append(outcome.attempt)
    if outcome.status in CALLED_STATUSES:
        usage = state.usage_of(state.jobs[fire["job_id"]]["team"])
        usage["attempts"] += 1
        usage["webhook_ms"] += max(0, outcome.finished_ms - outcome.started_ms)
        usage["bytes_sent"] += max(0, outcome.bytes_sent)
    if outcome.fire_id in book.ended:  # the fire ended before this attempt reported (schedb.fsm.fires)
        _late_outcome(state, fire, outcome)
        return True
    if book.withdrawn.pop(outcome.fire_id, None) is not None:
        if fire["trigger"] == Trigger.SCHEDULE:  # it ran after all: a resume must not place it again
            decide(state.jobs[fire["job_id"]], fire["scheduled_ms"])
            state.occurrence_ran(fire["job_id"], fire["scheduled_ms"])
        return True
    if outcome.status == ExecutionStatus.SUCCEEDED:  # the first success ends the fire, from any attempt
        workflow.end_fire(state, outcome.fire_id, StepStatus.SUCCEEDED)
    elif outcome.attempt != fire["attempt"]:
        pass  # an older attempt that failed or was not started says nothing about the current one
    elif outcome.status in (ExecutionStatus.SKIPPED, ExecutionStatus.MISSED):
        state.counters["fires_skipped" if outcome.status == ExecutionStatus.SKIPPED else "fires_missed"] += 1
        workflow.end_fire(state, outcome.fire_id, StepStatus.SKIPPED)
    else:
        _retry_or_bury(state, fire, outcome)
    return True


def _late_outcome(state: State, fire: Fire, outcome: Outcome) -> None:
    """Recorded, and nothing else: the fire ended already. A success was a delivery after all:
    its dead letter goes (a replay would call it again)."""
    succeeded = outcome.status == ExecutionStatus.SUCCEEDED
    state.book.settle_ended(fire, succeeded)
    if succeeded:
        state.dead_letters.pop(outcome.fire_id, None)


def _skip_reason(outcome: Outcome) -> str:
    """Executors put the reason first in the error text of a skip: "replaced: by …"."""
    if outcome.status not in (ExecutionStatus.SKIPPED, ExecutionStatus.MISSED):
        return ""
    prefix = str(outcome.error).split(":", 1)[0]
    return prefix if prefix in SKIP_REASONS else str(Reason.SKIPPED_OVERLAP)


def _retry_or_bury(state: State, fire: Fire, outcome: Outcome) -> None:
    retry = state.jobs[fire["job_id"]]["spec"]["retry"]
    if fire["attempt"] - fire["attempt_base"] < retry["max_attempts"] and not dead_letters.at_most_once(state, fire):
        delay_ms = backoff_ms(fire["fire_id"], fire["attempt"], retry["backoff_s"], retry["backoff_max_s"],
                              outcome.retry_after_ms)
        state.book.next_attempt(fire, state.now_ms + delay_ms)
        state.set_lease(fire)
        state.counters["retries_scheduled"] += 1
        return
    dead_letters.bury(state, fire, outcome.status, outcome.http_status, outcome.error)
