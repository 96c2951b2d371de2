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

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from schedb import history, misfire, tenancy, workflow
from schedb.commands import (
    AssignFires,
    BackfillJob,
    CompleteFires,
    DrainNode,
    DropDeadLetter,
    Outcome,
    RegisterNode,
    ReplayDeadLetter,
    outcome_from_list,
)
from schedb.fires import PENDING, Fire, fire_id_of
from schedb.report import clean_report
from schedb.retry import backoff_ms
from schedb.schedule import parse_schedule

if TYPE_CHECKING:
    from schedb.state import Result, State

# What an executor may report; "skipped" and "missed" are fires it did not start
# (or cancelled), per the job's concurrency and misfire policies (policies.py).
OUTCOME_STATUSES = ("succeeded", "failed", "timed_out", "skipped", "missed")
SKIP_REASONS = ("skipped_overlap", "replaced", "missed")
CALLED_STATUSES = ("succeeded", "failed", "timed_out")  # the webhook was called
ERROR_LEN_MAX = 512
BACKFILL_FIRES_MAX = 1_000
NODE_FIELD_LEN_MAX = 128
# A pause or reschedule takes back the job's fires due later than this; sooner ones go ahead:
# an executor whose clock is ahead (by up to clock.max_offset_ms, which config keeps below
# this) may have started one before the command reached it.
WITHDRAW_SLACK_MS = 1_000


def register_node(state: State, cmd: RegisterNode) -> Result:
    for value in (cmd.node_id, cmd.raft_addr, cmd.http_addr):
        if not isinstance(value, str) or not 0 < len(value) <= NODE_FIELD_LEN_MAX:
            return {"error": "invalid", "detail": "node id and addresses must be short strings"}
    for other_id, other in state.nodes.items():
        if other["raft_addr"] == cmd.raft_addr and other_id != cmd.node_id:
            return {"error": "conflict", "detail": f"raft address already registered by {other_id}"}
    state.nodes[cmd.node_id] = {"raft_addr": cmd.raft_addr, "http_addr": cmd.http_addr,
                                "registered_ms": state.now_ms, "draining": False}
    return {"ok": True}


def drain_node(state: State, cmd: DrainNode) -> Result:
    node = state.nodes.get(cmd.node_id) if isinstance(cmd.node_id, str) else None
    if node is None or not isinstance(cmd.release, list) or len(cmd.release) > state.limits.assign_batch_max:
        return {"error": "invalid", "detail": "unknown node, or release is not a bounded list"}
    node["draining"] = True
    released = 0
    for row in cmd.release:
        well_formed = isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
        fire = state.book.get(row[0]) if well_formed else None
        if fire is not None and fire["node"] == cmd.node_id and fire["attempt"] == row[1]:
            state.book.move(fire, PENDING)  # never started there: the same attempt goes elsewhere
            released += 1
    return {"ok": True, "released": released}


def assign_fires(state: State, cmd: AssignFires) -> Result:
    batch = state.limits.assign_batch_max
    if not (isinstance(cmd.items, list) and isinstance(cmd.reassign, list) and isinstance(cmd.release, list)) or \
            len(cmd.items) + len(cmd.reassign) + len(cmd.release) > batch:
        return {"error": "invalid", "detail": "items must be lists within the batch bound"}
    outcomes = [_assign_one(state, item) for item in cmd.items]
    released = sum(1 for item in cmd.release if _release_one(state, cmd.leader_id, item))
    moved = sum(1 for item in cmd.reassign if _reassign_one(state, item))
    assigned = outcomes.count("assigned")
    state.counters["fires_assigned"] += assigned
    state.counters["assign_stale"] += outcomes.count("stale") + len(cmd.reassign) - moved + len(cmd.release) - released
    return {"ok": True, "assigned": assigned, "reassigned": moved + released, "throttled": outcomes.count("throttled")}


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
    policy said no), or "stale" (no change: the item no longer matches the state)."""
    if not (isinstance(item, list) and len(item) == 3):
        return "stale"
    job_id, scheduled_ms, node_id = item
    job = state.jobs.get(job_id) if isinstance(job_id, str) else None
    if job is None or job["next_fire_ms"] != scheduled_ms or node_id not in state.nodes:
        return "stale"
    if scheduled_ms < state.now_ms - state.limits.misfire_grace_ms:
        if not misfire.may_catch_up(state):  # this command's catch-up work is spent: the leader sends it again
            state.counters["catch_ups_deferred"] += 1
            return "stale"
        next_ms = apply_misfire_policy(state, job_id, scheduled_ms, "missed")
        if next_ms != scheduled_ms:
            # What the policy skipped is decided; never past now (a later schedule edit must
            # not lose the new schedule's occurrences).
            decide(job, min(next_ms - 1, state.now_ms) if next_ms is not None else scheduled_ms)
            state.place(job_id, next_ms)
            return "missed"
    decide(job, scheduled_ms)
    created = fire_id_of(job_id, scheduled_ms) not in state.book.fires  # a trigger may own this instant
    if created and not tenancy.take_fires(state, job["team"], 1, scheduled_ms):
        _throttle(state, job_id, scheduled_ms)
        return "throttled"
    if created:
        state.new_fire(job_id, scheduled_ms, node_id, trigger="schedule")
    state.schedule_from(job_id, scheduled_ms)
    return "assigned" if created else "stale"


def decide(job: dict[str, Any], up_to_ms: int) -> None:
    """Every occurrence of the job's schedule up to up_to_ms has been decided (see State.place)."""
    job["decided_ms"] = max(job.get("decided_ms") or up_to_ms, up_to_ms)


def _throttle(state: State, job_id: str, scheduled_ms: int) -> None:
    """An occurrence over its team's fires-per-minute quota is not fired, but recorded."""
    team = state.jobs[job_id]["team"]
    limit = tenancy.quota(state, team)["fires_per_minute"]
    record(state, job_id, scheduled_ms, 0, "", "throttled", reason="fires_per_minute",
           error=f"team {team!r} is over its fires_per_minute quota ({limit})")
    state.counters["fires_throttled"] += 1
    tenancy.usage_of(state, team)["throttled"] += 1
    state.schedule_from(job_id, scheduled_ms)
    if state.jobs[job_id]["next_fire_ms"] is None:  # its last occurrence (a one-shot): keep it replayable
        _dead_letter(state, fire_id_of(job_id, scheduled_ms), job_id, scheduled_ms, 0, "throttled", 0,
                     f"over the fires_per_minute quota ({limit})")


def resume_misfires(state: State, job_id: str) -> None:
    """Occurrences that came due while the job was paused go through its misfire policy."""
    job = state.jobs[job_id]
    spec = job["spec"]
    if spec["schedule"] is None:
        return
    after_ms = max(job["paused_ms"] or state.now_ms, job.get("decided_ms") or 0)  # decided ones were fired
    first_ms = parse_schedule(spec["schedule"], spec["timezone"]).next_after(after_ms)
    if first_ms is not None and first_ms <= state.now_ms:
        state.place(job_id, apply_misfire_policy(state, job_id, first_ms, "skipped_paused"))


def withdraw_future_fires(state: State, job_id: str, *, everything: bool) -> None:
    """A rescheduled job keeps no scheduled fire that is not due yet (by WITHDRAW_SLACK_MS); a
    paused job keeps no fire at all that is not due yet (retries, triggers and replays included).
    What was taken back is no longer decided: the job's occurrences are decided up to now, or up
    to the latest scheduled fire it keeps (State.place will not place those again)."""
    job = state.jobs[job_id]
    for scheduled_ms in list(job["active_fires"]):
        fire_id = fire_id_of(job_id, scheduled_ms)
        fire = state.book.fires[fire_id]
        # Due within the slack, it may have started on an executor whose clock is a little ahead
        # (within clock.max_offset_ms), before this command reached it: it goes ahead.
        not_started = fire["due_ms"] > state.now_ms + WITHDRAW_SLACK_MS or fire["node"] == PENDING
        if not_started and (everything or fire["trigger"] == "schedule"):
            job["active_fires"].remove(scheduled_ms)
            state.book.withdraw(fire_id, state.limits.withdrawn_max)
            if not workflow.root_withdrawn(state, fire):  # a run whose root never fired never happened
                workflow.fire_ended(state, fire, "skipped")  # a step taken back: its run goes on
    if job.get("decided_ms") is not None:
        kept = [ms for ms in job["active_fires"] if state.book.fires[fire_id_of(job_id, ms)]["trigger"] == "schedule"]
        job["decided_ms"] = min(job["decided_ms"], max([state.now_ms, *kept]))


def apply_misfire_policy(state: State, job_id: str, first_ms: int, reason: str) -> int | None:
    """The job fell behind (first_ms is long past, or came due while it was paused): count what
    its misfire policy skips, record the first of them with `reason`, and return the occurrence
    to wait for. Its work counts against the command's catch-up budget (misfire.may_catch_up)."""
    spec = state.jobs[job_id]["spec"]
    decision = misfire.catch_up(parse_schedule(spec["schedule"], spec["timezone"]), first_ms, state.now_ms,
                                spec["misfire"], state.limits.catch_up_window_ms, state.limits.missed_records_max)
    misfire.spend(state, decision.work)
    state.counters["fires_missed" if reason == "missed" else "fires_skipped"] += decision.missed_total
    for missed_ms in decision.missed_ms:
        record(state, job_id, missed_ms, 0, "", "missed" if reason == "missed" else "skipped", reason=reason)
    return decision.next_ms


def _reassign_one(state: State, item: Any) -> bool:
    if not (isinstance(item, list) and len(item) == 3):
        return False
    fire_id, attempt, node_id = item
    fire = state.book.get(fire_id) if isinstance(fire_id, str) else None
    if fire is None or fire["attempt"] != attempt or node_id not in state.nodes or fire["node"] == node_id:
        return False
    if fire["node"] != PENDING and fire["due_ms"] <= state.now_ms and _at_most_once(state, fire):
        # It may have been delivered: a second attempt could call the webhook twice.
        record(state, fire["job_id"], fire["scheduled_ms"], fire["attempt"], fire["node"], "unknown",
               error="executor lost before reporting; at_most_once forbids another attempt",
               reason="executor_lost", trigger=fire["trigger"])
        _bury(state, fire, "unknown", 0, "executor lost before reporting")
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
    fire = state.book.get(outcome.fire_id) or state.book.withdrawn.get(outcome.fire_id)
    if fire is None or fire["job_id"] not in state.jobs:
        return False
    if outcome.attempt in fire["reported"] or not 1 <= outcome.attempt <= fire["attempt"]:
        return False
    record(state, fire["job_id"], fire["scheduled_ms"], outcome.attempt, node_id, outcome.status,
           http_status=outcome.http_status, started_ms=outcome.started_ms, finished_ms=outcome.finished_ms,
           error=outcome.error, reason=_skip_reason(outcome), trigger=fire["trigger"], report=outcome.report)
    fire["reported"].append(outcome.attempt)
    if outcome.status in CALLED_STATUSES:
        usage = tenancy.usage_of(state, state.jobs[fire["job_id"]]["team"])
        usage["attempts"] += 1
        usage["webhook_ms"] += max(0, outcome.finished_ms - outcome.started_ms)
        usage["bytes_sent"] += max(0, outcome.bytes_sent)
    if state.book.withdrawn.pop(outcome.fire_id, None) is not None:
        if fire["trigger"] == "schedule":  # it ran after all: a resume must not place it again
            decide(state.jobs[fire["job_id"]], fire["scheduled_ms"])
        return True
    if outcome.status == "succeeded":  # the first success ends the fire, from any attempt
        state.end_fire(outcome.fire_id, "succeeded")
    elif outcome.attempt != fire["attempt"]:
        pass  # an older attempt that failed or was not started says nothing about the current one
    elif outcome.status in ("skipped", "missed"):
        state.counters["fires_skipped" if outcome.status == "skipped" else "fires_missed"] += 1
        state.end_fire(outcome.fire_id, "skipped")
    else:
        _retry_or_bury(state, fire, outcome)
    return True


def _skip_reason(outcome: Outcome) -> str:
    """Executors put the reason first in the error text of a skip: "replaced: by …"."""
    if outcome.status not in ("skipped", "missed"):
        return ""
    prefix = str(outcome.error).split(":", 1)[0]
    return prefix if prefix in SKIP_REASONS else "skipped_overlap"


def record(state: State, job_id: str, scheduled_ms: int, attempt: int, node_id: str, status: str, *,
           http_status: int = 0, started_ms: int | None = None, finished_ms: int | None = None,
           error: str = "", reason: str = "", trigger: str = "schedule", report: dict | None = None) -> None:
    """Append one execution record to the job's history and the cluster-wide list; a run report
    (already checked, schedb.report) only when there is one."""
    started = state.now_ms if started_ms is None else started_ms
    finished = state.now_ms if finished_ms is None else finished_ms
    execution = {
        "fire_id": fire_id_of(job_id, scheduled_ms), "job_id": job_id, "scheduled_ms": scheduled_ms,
        "attempt": attempt, "node": node_id, "status": status, "http_status": http_status,
        "started_ms": started, "finished_ms": finished, "duration_ms": max(0, finished - started),
        "error": str(error)[:ERROR_LEN_MAX], "committed_ms": state.now_ms, "trigger": trigger, "reason": reason,
    }
    if report:
        execution["report"] = report
    history.append(state, job_id, execution)  # the job's ring, within the cluster-wide bound
    state.recent.append(execution)


def _at_most_once(state: State, fire: Fire) -> bool:
    return state.jobs[fire["job_id"]]["spec"]["delivery"] == "at_most_once"


def _retry_or_bury(state: State, fire: Fire, outcome: Outcome) -> None:
    retry = state.jobs[fire["job_id"]]["spec"]["retry"]
    if fire["attempt"] - fire["attempt_base"] < retry["max_attempts"] and not _at_most_once(state, fire):
        delay_ms = backoff_ms(fire["fire_id"], fire["attempt"], retry["backoff_s"], retry["backoff_max_s"],
                              outcome.retry_after_ms)
        state.book.next_attempt(fire, state.now_ms + delay_ms)
        state.set_lease(fire)
        state.counters["retries_scheduled"] += 1
        return
    _bury(state, fire, outcome.status, outcome.http_status, outcome.error)


def _bury(state: State, fire: Fire, status: str, http_status: int, error: str) -> None:
    """Move a fire that will not be tried again to the dead-letter queue."""
    _dead_letter(state, fire["fire_id"], fire["job_id"], fire["scheduled_ms"], fire["attempt"], status,
                 http_status, error)
    state.end_fire(fire["fire_id"], "failed")


def _dead_letter(state: State, fire_id: str, job_id: str, scheduled_ms: int, attempts: int, status: str,
                 http_status: int, error: str) -> None:
    state.dead_letters[fire_id] = {
        "fire_id": fire_id, "job_id": job_id, "scheduled_ms": scheduled_ms, "attempts": attempts,
        "last_status": status, "last_http_status": http_status, "last_error": str(error)[:ERROR_LEN_MAX],
        "dead_ms": state.now_ms,
    }
    while len(state.dead_letters) > state.limits.dead_letters_max:
        del state.dead_letters[next(iter(state.dead_letters))]
        state.counters["dead_letters_evicted"] += 1
    state.counters["dead_lettered"] += 1


def _letter(state: State, fire_id: Any, actor: dict[str, Any]) -> dict[str, Any] | None:
    """A dead letter the actor may see: another team's does not exist for it."""
    letter = state.dead_letters.get(fire_id) if isinstance(fire_id, str) else None
    return letter if letter is not None and tenancy.can_touch(actor, state.jobs[letter["job_id"]]) else None


def replay_dead_letter(state: State, cmd: ReplayDeadLetter) -> Result:
    letter = _letter(state, cmd.fire_id, cmd.actor)
    if letter is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    if cmd.fire_id in state.book.fires:
        return {"error": "conflict", "detail": f"fire {cmd.fire_id!r} is active"}
    team = state.jobs[letter["job_id"]]["team"]
    if not tenancy.take_fires(state, team, 1, state.now_ms):
        return tenancy.over_quota(state, team, "fires_per_minute", "the replay was not run")
    del state.dead_letters[cmd.fire_id]
    # A replay gets the job's full retry budget again; attempt numbers keep counting up.
    state.new_fire(letter["job_id"], letter["scheduled_ms"], PENDING, trigger="replay",
                   attempt=letter["attempts"] + 1, correlation_id=cmd.correlation_id)
    state.counters["replayed"] += 1
    return {"ok": True, "fire_id": cmd.fire_id}


def drop_dead_letter(state: State, cmd: DropDeadLetter) -> Result:
    if _letter(state, cmd.fire_id, cmd.actor) is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    del state.dead_letters[cmd.fire_id]
    return {"ok": True}


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
    schedule = parse_schedule(job["spec"]["schedule"], job["spec"]["timezone"])
    occurrences: list[int] = []
    next_ms = schedule.next_after(cmd.start_ms - 1)
    while next_ms is not None and next_ms <= cmd.end_ms:
        if len(occurrences) == BACKFILL_FIRES_MAX:
            return {"error": "invalid", "detail": f"the range holds more than {BACKFILL_FIRES_MAX} occurrences",
                    "errors": [{"field": "end", "message": f"at most {BACKFILL_FIRES_MAX} occurrences per backfill"}]}
        occurrences.append(next_ms)
        next_ms = schedule.next_after(next_ms)
    fresh = [ms for ms in occurrences if fire_id_of(cmd.job_id, ms) not in state.book.fires]
    if not tenancy.take_fires(state, job["team"], len(fresh), state.now_ms):
        return tenancy.over_quota(state, job["team"], "fires_per_minute", f"the backfill holds {len(fresh)} fires")
    created = [state.new_fire(cmd.job_id, ms, PENDING, trigger="backfill",
                              correlation_id=cmd.correlation_id)["fire_id"] for ms in fresh]
    state.counters["backfilled"] += len(created)
    return {"ok": True, "fires": len(created), "fire_ids": created[:10],
            "already_active": len(occurrences) - len(created)}
