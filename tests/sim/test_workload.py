"""The operator (devkit.sim.workload): deterministic, varied, and its actions mostly apply."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from devkit.sim.workload import (
    ACTIONS,
    INITIAL_JOBS_MIN,
    T0,
    TIME_ZONES,
    Operator,
    initial_jobs,
    known_dead_letters,
    known_jobs,
)
from schedb.commands import Command, CreateJob, CreateJobs, ReplaceJob, encode
from schedb.jobspec import validate_job
from schedb.schedule import parse_schedule
from tests.sim.driver import SimRun

PAIR_WINDOW_MS = 6_000


def _specs(commands: list[Command]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for command in commands:
        if isinstance(command, CreateJob):
            out.append(command.spec)
        elif isinstance(command, CreateJobs):
            out += command.specs
    return out


def test_initial_jobs_are_many_and_varied() -> None:
    commands = initial_jobs(random.Random(3), 60)
    specs = _specs(commands)
    assert len(specs) >= INITIAL_JOBS_MIN
    assert {type(c) for c in commands} == {CreateJob, CreateJobs}
    assert [s["id"] for s in specs] == [f"job-{n:03d}" for n in range(len(specs))]
    schedules = [s["schedule"] for s in specs if "schedule" in s]
    assert any(s.startswith("@every") for s in schedules)
    assert any(len(s.split()) == 6 for s in schedules) and any(len(s.split()) == 5 for s in schedules)
    assert {s["timezone"] for s in specs} == set(TIME_ZONES)
    for field, options in (("delivery", 2), ("concurrency", 3), ("misfire", 3)):
        assert len({s[field] for s in specs}) == options, field
    assert all(1 <= s["webhook"]["timeout_s"] <= 10 for s in specs)
    assert any("depends_on" in s for s in specs)  # a small workflow or two


def test_a_seed_gives_one_workload() -> None:
    def draw(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        commands = initial_jobs(rng, 55)
        jobs_known = {s["id"]: {"spec": validate_job(s), "version": 1} for s in _specs(commands)}
        operator = Operator(first_new_job=55)
        for step in range(2_000):
            command = operator.next_action(rng, T0 + step * 250, jobs_known, ["job-001:1"])
            commands += [command] if command is not None else []
        return [encode(c) for c in commands]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_the_operator_acts_in_every_way_and_mostly_succeeds(clean_run: SimRun) -> None:
    refused = sum(clean_run.refusals.values())
    ratio = refused / clean_run.operator_commands
    print(f"operator commands {clean_run.operator_commands}, refused {refused} ({ratio:.1%}): "
          f"{dict(clean_run.refusals)}; drawn {clean_run.operator.drawn}")
    assert set(clean_run.operator.drawn) == {kind for kind, _ in ACTIONS}
    assert ratio < 0.05 and clean_run.unexplained == 0
    assert all(reason.split(": ")[1] in ("conflict", "not_found", "precondition_failed", "invalid")
               for reason in clean_run.refusals)


def test_pauses_are_mostly_resumed_within_seconds_often_just_before_a_fire(clean_run: SimRun) -> None:
    """Where a past bug lived: pause, then resume a few seconds before the job fires."""
    pauses, paired, before_fire = 0, 0, 0
    paused_at: dict[str, int] = {}
    for entry in clean_run.applied:
        command = entry.command
        if not isinstance(command, ReplaceJob) or "error" in entry.result or command.spec.get("schedule") is None:
            continue
        job_id, paused = command.spec["id"], command.spec["paused"]
        if paused and job_id not in paused_at:
            pauses += 1
            paused_at[job_id] = command.now_ms
        elif not paused and job_id in paused_at:
            paired += command.now_ms - paused_at.pop(job_id) <= PAIR_WINDOW_MS
            upcoming = parse_schedule(command.spec["schedule"], command.spec["timezone"]).next_after(command.now_ms)
            before_fire += upcoming is not None and upcoming - command.now_ms <= 4_500
    print(f"pauses {pauses}, resumed within {PAIR_WINDOW_MS} ms {paired}, resumed <= 4.5 s before a fire "
          f"{before_fire}")
    assert pauses >= 50 and paired >= pauses // 2 and before_fire >= pauses // 3


def test_what_the_operator_reads_leaves_the_state_alone(clean_run: SimRun) -> None:
    before = clean_run.state.canonical_bytes()
    jobs = known_jobs(clean_run.state, clean_run.end_ms)
    letters = known_dead_letters(clean_run.state)
    assert sorted(jobs) == sorted(clean_run.state.jobs) and letters
    for job_id in sorted(jobs)[:10]:  # what an operator builds from a job leaves the job alone
        Operator().next_action(random.Random(job_id), clean_run.end_ms, {job_id: jobs[job_id]}, letters)
    assert clean_run.state.canonical_bytes() == before


def test_the_operator_is_quiet_between_its_actions() -> None:
    operator, rng = Operator(mean_gap_ms=2_000), random.Random(1)
    kinds = Counter(operator.next_action(rng, T0 + ms, {}) is None for ms in range(0, 2_000, 100))
    assert kinds[True] >= 19  # at most one draw in its first 2 s, and with no job known it does nothing
