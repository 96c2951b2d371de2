"""A job's occurrences inside the replicated state: which are decided, which a misfire policy
skips, and which fires a pause or a reschedule takes back.

An occurrence is decided once it was fired, missed or throttled (`decide`): State.place never
puts a job back on a decided occurrence, so a resume or a reschedule cannot fire one twice.
Used by the AssignFires handler (schedb.fsm.assign) and the job handlers (schedb.fsm.jobs);
deterministic like every handler.
"""

from __future__ import annotations

from schedb.fsm import history, misfire, workflow
from schedb.fsm.core import State
from schedb.fsm.fires import PENDING, fire_id_of
from schedb.fsm.model import ExecutionStatus, Fire, Job, Reason, StepStatus, Trigger
from schedb.schedule import parse_schedule

# A pause or reschedule takes back the job's fires due later than this; sooner ones go ahead:
# an executor whose clock is ahead (by up to clock.max_offset_ms, which config keeps below
# this) may have started one before the command reached it.
WITHDRAW_SLACK_MS = 1_000
# The backfilled occurrences a job remembers (schedb.fsm.jobs.BACKFILL_FIRES_MAX, one backfill's worth).
BACKFILLED_MAX = 1_000


def decide(job: Job, up_to_ms: int) -> None:
    """Every occurrence of the job's schedule up to up_to_ms has been decided (see State.place)."""
    job["decided_ms"] = max(job.get("decided_ms") or up_to_ms, up_to_ms)


def note_backfilled(job: Job, instants: list[int]) -> None:
    """A backfill made fires for these occurrences, under their own fire ids. Those the schedule
    has not decided (a paused stretch, or ahead of the slot) are that occurrence's fire: once
    they end, a resume or the slot must not fire them again (`backfilled`). Kept until the
    schedule is past them for good (room for them is checked first: `backfill_fits`)."""
    kept = _backfilled_after(job, instants)
    if kept:
        job["backfilled_ms"] = kept
    else:
        job.pop("backfilled_ms", None)


def backfill_fits(job: Job, instants: list[int]) -> bool:
    """Can the job remember these besides what it already does (at most BACKFILLED_MAX)? Dropping
    older ones would let those fire again: a backfill that does not fit is refused."""
    return len(_backfilled_after(job, instants)) <= BACKFILLED_MAX


def _backfilled_after(job: Job, instants: list[int]) -> list[int]:
    floor_ms = _decided_for_good(job)
    return [ms for ms in sorted({*job.get("backfilled_ms", ()), *instants}) if ms > floor_ms]


def backfilled(job: Job, scheduled_ms: int) -> bool:
    """Whether a backfill fired the job's occurrence at scheduled_ms (note_backfilled)."""
    return scheduled_ms in job.get("backfilled_ms", ())


def _decided_for_good(job: Job) -> int:
    """No occurrence up to here can be placed again: decided_ms only rises, except that a
    withdrawal lowers it, never below ran_ms (withdraw_future_fires); ran_ms only rises."""
    decided_ms, ran_ms = job.get("decided_ms"), job.get("ran_ms")
    return -1 if decided_ms is None or ran_ms is None else min(decided_ms, ran_ms)


def apply_misfire_policy(state: State, job_id: str, first_ms: int, reason: Reason,
                         policy: str | None = None) -> int | None:
    """The job fell behind (first_ms is long past, or came due while it was paused): count what
    its misfire policy (or `policy`) skips, record the first of them with `reason` (missed or
    skipped_paused), and return the occurrence to wait for. Its work counts against the
    command's catch-up budget (State.may_catch_up)."""
    spec = state.jobs[job_id]["spec"]
    decision = misfire.catch_up(parse_schedule(spec["schedule"], spec["timezone"]), first_ms, state.now_ms,
                                policy or spec["misfire"], state.limits.catch_up_window_ms,
                                state.limits.missed_records_max)
    state.spend_catch_up(decision.work)
    missed = reason == Reason.MISSED
    state.counters["fires_missed" if missed else "fires_skipped"] += decision.missed_total
    for missed_ms in decision.missed_ms:
        history.record(state, job_id, missed_ms, 0, "", ExecutionStatus.MISSED if missed else ExecutionStatus.SKIPPED,
                       reason=reason)
    return decision.next_ms


def miss_overdue(state: State, job_id: str) -> None:
    """A pause or a change of the job's timing takes it out of its slot. An occurrence already
    due there was never assigned (the dispatcher had no executor to give it to, or not yet):
    it, and any after it up to now, are recorded missed rather than vanish. Call it before the
    job's spec changes (the occurrences are the old schedule's)."""
    job = state.jobs[job_id]
    first_ms = job["next_fire_ms"]
    if first_ms is None or first_ms > state.now_ms or job["spec"]["schedule"] is None:
        return
    apply_misfire_policy(state, job_id, first_ms, Reason.MISSED, policy="skip")
    decide(job, state.now_ms)


def resume_misfires(state: State, job_id: str) -> None:
    """Occurrences that came due while the job was paused go through its misfire policy."""
    job = state.jobs[job_id]
    spec = job["spec"]
    if spec["schedule"] is None:
        return
    after_ms = max(job["paused_ms"] or state.now_ms, job.get("decided_ms") or 0)  # decided ones were fired
    first_ms = parse_schedule(spec["schedule"], spec["timezone"]).next_after(after_ms)
    if first_ms is not None and first_ms <= state.now_ms:
        state.place(job_id, apply_misfire_policy(state, job_id, first_ms, Reason.SKIPPED_PAUSED))


def _due_and_waiting(state: State, fire: Fire) -> bool:
    """A scheduled occurrence that fell due while no executor held its fire (handed back by a
    drain, released, or never given out): taken back, it would never fire nor be recorded, since
    a resume or a new schedule starts after now."""
    return fire["trigger"] == Trigger.SCHEDULE and fire["node"] == PENDING and fire["due_ms"] <= state.now_ms


def _miss(state: State, fire: Fire) -> None:
    """A pause ends a due fire that no executor holds: recorded missed, not run after the pause."""
    history.record(state, fire["job_id"], fire["scheduled_ms"], fire["attempt"], "", ExecutionStatus.MISSED,
                   reason=Reason.MISSED, error="paused while it waited for an executor")
    state.counters["fires_missed"] += 1
    workflow.end_fire(state, fire["fire_id"], StepStatus.SKIPPED)


def withdraw_future_fires(state: State, job_id: str, *, everything: bool) -> None:
    """A rescheduled job keeps no scheduled fire that is not due yet (by WITHDRAW_SLACK_MS); a
    paused job keeps no fire at all that is not due yet (retries, triggers and replays included).
    What was taken back is no longer decided: the job's occurrences are decided up to now, the
    latest that ran (State.occurrence_ran), or the latest scheduled fire it keeps, whichever is
    latest (State.place will not place those again)."""
    job = state.jobs[job_id]
    for scheduled_ms in list(job["active_fires"]):
        fire_id = fire_id_of(job_id, scheduled_ms)
        fire = state.book.fires[fire_id]
        if _due_and_waiting(state, fire):
            if everything:
                _miss(state, fire)
            continue  # an edit leaves it to run: it fell due while the job was active
        # Due within the slack, it may have started on an executor whose clock is a little ahead
        # (within clock.max_offset_ms), before this command reached it: it goes ahead.
        not_started = fire["due_ms"] > state.now_ms + WITHDRAW_SLACK_MS or fire["node"] == PENDING
        if not_started and (everything or fire["trigger"] == Trigger.SCHEDULE):
            job["active_fires"].remove(scheduled_ms)
            state.book.withdraw(fire_id, state.limits.withdrawn_max)
            workflow.step_withdrawn(state, fire)
    if job.get("decided_ms") is not None:
        kept = [ms for ms in job["active_fires"]
                if state.book.fires[fire_id_of(job_id, ms)]["trigger"] == Trigger.SCHEDULE]
        job["decided_ms"] = min(job["decided_ms"], max([state.now_ms, job.get("ran_ms", state.now_ms), *kept]))
