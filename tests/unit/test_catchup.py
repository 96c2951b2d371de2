"""Catching up after an outage (issue 16, defect 6): the misfire path walked up to 1,000 occurrences
per job inside one apply (9.3 s for 200 per-minute jobs 17 h late, on every node at once). Now one
command spends a bounded number of schedule evaluations, and the leader's next rounds do the rest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from schedb.commands import AssignFires, Command, CreateJob, ReplaceJob
from schedb.dispatcher import ASSIGN_BATCH_MAX
from schedb.fsm import misfire
from schedb.fsm.machine import StateMachine
from schedb.schedule import Schedule, parse_schedule
from schedb.timefmt import rfc3339_to_ms
from tests.unit.test_state import T0, cluster_state, spec

MINUTE = 60_000
LATE = T0 + 17 * 60 * MINUTE  # T0 is a whole minute: the cluster comes back 1,020 minutes later
JOBS = 200
# A croniter evaluation costs 50-90 µs here: ~600 of them are the ~50 ms one apply may spend.
EVALUATIONS_PER_COMMAND_MAX = 600


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Calls of the schedule's next_after / last_at_or_before: the work of catching up, counted."""
    counts: Counter[str] = Counter()

    def counting(name: str) -> Any:
        original = getattr(Schedule, name)

        def counted(self: Schedule, ms: int) -> Any:
            counts[name] += 1
            return original(self, ms)
        return counted

    for name in ("next_after", "last_at_or_before"):
        monkeypatch.setattr(Schedule, name, counting(name))
    yield counts


def at(state: StateMachine, command: Command) -> dict[str, Any]:
    """Apply a command after the leader's clock tick of its time (only the leader moves replicated time)."""
    state.apply(AssignFires(command.now_ms, []))
    return state.apply(command)


def late_jobs(schedule: str, policy: str = "run_once") -> StateMachine:
    state = cluster_state()
    for i in range(JOBS):
        assert state.apply(CreateJob(T0, spec(f"job{i:03d}", schedule, misfire=policy)))["ok"]
    return state


def dispatch(state: StateMachine, now_ms: int) -> dict[str, Any]:
    """What the leader's dispatcher proposes: every job due within the lookahead, in one batch."""
    items = [[job_id, ms, "node2"] for job_id, ms in state.due_jobs(now_ms + 5_000, ASSIGN_BATCH_MAX)]
    return state.apply(AssignFires(now_ms, items))


def still_late(state: StateMachine) -> int:
    return sum(1 for _, ms in state.due_jobs(LATE, JOBS) if ms < LATE - state.limits.misfire_grace_ms)


def missed_records(state: StateMachine, job_id: str) -> list[int]:
    return [(e["scheduled_ms"] - T0) // MINUTE for e in state.history[job_id] if e["status"] == "missed"]


def test_a_17_hour_outage_is_caught_up_a_bounded_number_of_evaluations_per_command(
        evaluations: Counter[str]) -> None:
    state = late_jobs("* * * * *")
    rounds = 0
    while still_late(state):
        evaluations.clear()
        dispatch(state, LATE)
        rounds += 1
        assert sum(evaluations.values()) <= EVALUATIONS_PER_COMMAND_MAX, (rounds, evaluations)
        assert rounds <= JOBS
    assert rounds > 1  # the late jobs took several rounds of the dispatcher
    dispatch(state, LATE)
    # run_once: the latest occurrence of every job fires (on the round after its catch-up)
    assert sorted(f["job_id"] for f in state.book.fires.values() if f["scheduled_ms"] == LATE) == sorted(state.jobs)
    assert len(state.book.fires) == JOBS
    # the first missed_records_max (100) occurrences are recorded; a cron's count past them is a lower bound
    assert all(missed_records(state, job_id) == list(range(1, 101)) for job_id in state.jobs)
    assert JOBS * 101 <= state.counters["fires_missed"] <= JOBS * 1019


def test_late_jobs_over_the_budget_are_left_for_the_next_round_unchanged() -> None:
    state = late_jobs("* * * * *")
    result = dispatch(state, LATE)
    assert result["assigned"] == 0
    deferred = state.counters["catch_ups_deferred"]
    assert 0 < deferred < JOBS and state.counters["assign_stale"] == deferred
    # the dispatcher finds them again where they were, and nothing was recorded for them
    assert len([ms for _, ms in state.due_jobs(LATE, JOBS) if ms == T0 + MINUTE]) == deferred
    assert sum(1 for job_id in state.jobs if job_id in state.history) == JOBS - deferred


def test_an_every_schedule_counts_its_missed_occurrences_exactly() -> None:
    state = late_jobs("@every 1m")
    rounds = 0
    while still_late(state):
        dispatch(state, LATE)
        rounds += 1
    assert rounds <= 3  # arithmetic: cheap enough for ~100 jobs per command
    assert state.counters["fires_missed"] == JOBS * 1019  # 1 .. 1019 minutes; the 1,020th fires
    assert all(missed_records(state, job_id) == list(range(1, 101)) for job_id in state.jobs)


@pytest.mark.parametrize(("policy", "next_ms", "missed"), [
    ("skip", LATE + MINUTE, 1020),  # nothing fires before the next occurrence after now
    ("run_all", LATE - 60 * MINUTE, 959),  # the catch-up window (1 h) fires, oldest first
])
def test_skip_and_run_all_keep_their_meaning_over_a_long_outage(policy: str, next_ms: int, missed: int) -> None:
    state = late_jobs("@every 1m", policy)
    while any(job["next_fire_ms"] == T0 + MINUTE for job in state.jobs.values()):
        dispatch(state, LATE)
    # (run_all: a job caught up in an earlier round has fired its oldest occurrence since)
    assert {job["next_fire_ms"] for job in state.jobs.values()} <= {next_ms, next_ms + MINUTE}
    assert state.counters["fires_missed"] == JOBS * missed
    assert all(missed_records(state, job_id) == list(range(1, 101)) for job_id in state.jobs)


def test_resuming_after_a_year_of_pause_jumps_instead_of_walking(evaluations: Counter[str]) -> None:
    state = cluster_state()
    at(state, CreateJob(T0, spec(schedule="* * * * *", paused=True)))
    resume_ms = T0 + 365 * 24 * 60 * MINUTE + 30_000
    evaluations.clear()
    at(state, ReplaceJob(resume_ms, spec(schedule="* * * * *")))
    assert sum(evaluations.values()) <= 120  # the first 100 skipped occurrences, and a few jumps
    assert state.jobs["job"]["next_fire_ms"] == resume_ms - 30_000  # run_once: the latest fires
    skipped = [e for e in state.history["job"] if e["reason"] == "skipped_paused"]
    assert [(e["scheduled_ms"] - T0) // MINUTE for e in skipped] == list(range(1, 101))
    assert state.counters["fires_skipped"] >= 101


def _reference(schedule: Schedule, first_ms: int, now_ms: int, policy: str, window_ms: int) -> tuple[Any, list[int]]:
    """The policies' meaning, by walking every occurrence: (the one to wait for, the missed ones)."""
    walked = [first_ms]
    while walked[-1] is not None and walked[-1] <= now_ms:
        walked.append(schedule.next_after(walked[-1]))
    if policy == "run_all":
        keep_from = now_ms - window_ms
        resume = next(ms for ms in walked if ms is None or ms >= keep_from)
    elif policy == "skip":
        resume = walked[-1]
    else:
        resume = walked[-2] if len(walked) > 1 and walked[-2] <= now_ms else walked[-1]
    return resume, [ms for ms in walked if ms is not None and (resume is None or ms < resume)]


@pytest.mark.parametrize(("expression", "timezone", "start", "hours"), [
    ("*/7 * * * *", "Europe/Berlin", "2027-03-28T00:10:00Z", 5),  # across spring forward
    ("30 2 * * *", "Europe/Berlin", "2026-10-20T00:00:00Z", 24 * 12),  # a fixed hour across fall back
    ("0 */2 * * *", "America/New_York", "2026-11-01T00:00:00Z", 60),
    ("15 30 2 * * *", "Europe/Berlin", "2027-03-25T00:00:00Z", 24 * 6),  # a time inside the gap
    ("@every 90s", "UTC", "2026-06-01T00:00:00Z", 30),
    ("@at 2026-06-01T01:00:00Z", "UTC", "2026-06-01T00:00:00Z", 3),
])
@pytest.mark.parametrize("policy", ["run_once", "skip", "run_all"])
def test_catch_up_agrees_with_walking_every_occurrence(expression: str, timezone: str, start: str, hours: int,
                                                       policy: str) -> None:
    schedule = parse_schedule(expression, timezone)
    first_ms = schedule.next_after(rfc3339_to_ms(start))
    assert first_ms is not None
    now_ms, window_ms, records_max = rfc3339_to_ms(start) + hours * 3_600_000, 3 * 3_600_000, 10
    resume, missed = _reference(schedule, first_ms, now_ms, policy, window_ms)
    decision = misfire.catch_up(schedule, first_ms, now_ms, policy, window_ms, records_max=records_max)
    assert (decision.next_ms, decision.missed_ms) == (resume, missed[:records_max])
    exact = schedule.kind != "cron" or len(missed) <= records_max
    assert decision.missed_total == (len(missed) if exact else records_max + 1)
    # the gap is jumped, never walked: a probe, a jump, and the listed occurrences
    assert decision.work <= misfire.CRON_JUMP_WORK + (records_max + 1) * misfire.CRON_STEP_WORK \
        + records_max * misfire.RECORD_WORK
