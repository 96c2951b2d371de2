"""The oracle (devkit.sim.oracle) finds nothing lost in a clean run, and catches each way of
losing an occurrence: a fire that never completes, a record gone, an occurrence skipped, and the
past bug of a resume that lost the job's next fire."""

from __future__ import annotations

import copy

import pytest

from devkit.sim.oracle import Applied, handled_at, job_changes, lost_occurrences, outcome_counts
from devkit.sim.workload import ADMIN, T0
from schedb.commands import CreateJob, DeleteJob, ReplaceJob
from schedb.fsm import occurrences
from schedb.fsm.core import State
from schedb.schedule import parse_schedule
from schedb.timefmt import ms_to_rfc3339
from tests.sim.conftest import SEED
from tests.sim.driver import Faults, SimRun, simulate

SPEC = {"id": "j", "schedule": "@every 10s", "webhook": {"url": "http://receiver.sim:8080/hook/j"}}
PAUSED = {**SPEC, "paused": True}


def _untouched_jobs(run: SimRun) -> list[str]:
    """Jobs with a schedule that the operator never changed after creating them, alive at the end."""
    return [job_id for job_id, changes in sorted(job_changes(run.applied).items())
            if len(changes) == 1 and job_id in run.state.jobs and changes[0][1]["schedule"] is not None]


def test_nothing_is_lost_in_a_clean_run(clean_run: SimRun) -> None:
    tally: dict[str, int] = {}
    before = clean_run.state.canonical_bytes()
    assert lost_occurrences(clean_run.applied, clean_run.state, clean_run.end_ms, tally=tally) == []
    assert clean_run.state.canonical_bytes() == before  # read only
    print(f"oracle: {tally}; outcomes {outcome_counts(clean_run.state)}")
    assert tally["checked"] > 1_000 and tally["near_change"] > 0
    assert tally["beyond_history"] > 0  # some jobs outran their history ring (100 records)


def test_a_fire_that_never_completes_is_reported() -> None:
    job_id = "job-003"
    faults = Faults(drop_completion=(job_id, T0 + 200_000))
    run = simulate(SEED, faults=faults)
    lost = lost_occurrences(run.applied, run.state, run.end_ms)
    (fire_id,) = faults.dropped
    assert [line for line in lost if f"fire {fire_id} " in line and "never completed" in line], lost


def test_a_delivered_occurrence_whose_record_is_gone_is_reported(clean_run: SimRun) -> None:
    state = copy.deepcopy(clean_run.state)
    job_id = _untouched_jobs(clean_run)[0]
    ring = state.history[job_id]
    delivered = [r for r in ring if r["status"] == "succeeded" and r["trigger"] == "schedule"
                 and r["scheduled_ms"] < clean_run.end_ms - 100_000]
    scheduled_ms = delivered[-1]["scheduled_ms"]
    for record in [r for r in ring if r["scheduled_ms"] == scheduled_ms]:
        ring.remove(record)
    lost = lost_occurrences(clean_run.applied, state, clean_run.end_ms)
    assert lost == [f"{job_id} occurrence {ms_to_rfc3339(scheduled_ms)} ({scheduled_ms} ms): no fire, no outcome and "
                    "no missed/skipped/throttled record"]


def test_an_occurrence_skipped_without_a_trace_is_reported() -> None:
    faults = Faults(skip_occurrence=("job-003", T0 + 250_000))
    run = simulate(SEED, faults=faults)
    (fire_id,) = faults.skipped
    job_id, scheduled_ms = fire_id.rsplit(":", 1)
    lost = lost_occurrences(run.applied, run.state, run.end_ms)
    assert [line for line in lost if line.startswith(f"{job_id} occurrence ") and f"({scheduled_ms} ms)" in line]


def test_a_resume_that_loses_the_next_fire_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The past bug: pause, then resume a few seconds before a fire, and the fire never comes.
    A 6 s margin around changes would hide it: the default is the withdraw slack and a half."""
    resume_misfires = occurrences.resume_misfires

    def losing_resume(state: State, job_id: str) -> None:
        resume_misfires(state, job_id)
        job = state.jobs[job_id]
        if job["next_fire_ms"] is not None and job["next_fire_ms"] - state.now_ms < 5_000:
            spec = job["spec"]
            state.place(job_id, parse_schedule(spec["schedule"], spec["timezone"]).next_after(job["next_fire_ms"]))

    monkeypatch.setattr(occurrences, "resume_misfires", losing_resume)
    run = simulate(SEED, minutes=4)
    lost = lost_occurrences(run.applied, run.state, run.end_ms)
    assert lost and all("no fire, no outcome" in line or "withdrawn" in line for line in lost), lost
    assert lost_occurrences(run.applied, run.state, run.end_ms, margin_ms=6_000) == []


def test_outcome_counts_count_every_record(clean_run: SimRun) -> None:
    counts = outcome_counts(clean_run.state)
    assert sum(counts.values()) == sum(len(ring) for ring in clean_run.state.history.values())
    assert counts["succeeded"] > counts["failed"] > 0 and counts["skipped"] > 0


def test_a_job_life_starts_at_its_last_create_and_changes_count_when_handled() -> None:
    ok = {"ok": True, "job_id": "j"}
    log = [Applied(1, CreateJob(T0, SPEC, actor=ADMIN), ok, T0),
           Applied(2, DeleteJob(T0 + 5_000, "j", actor=ADMIN), ok, T0 + 5_000),
           Applied(3, CreateJob(T0 + 9_000, SPEC, actor=ADMIN), ok, T0 + 8_600),  # its clock leads: its own time
           Applied(4, ReplaceJob(T0 + 20_000, PAUSED, actor=ADMIN), {"error": "conflict"}, T0 + 20_000),  # refused
           Applied(5, ReplaceJob(T0 + 40_000, PAUSED, actor=ADMIN), ok, T0 + 30_000)]  # its clock too far ahead
    changes = job_changes(log)
    assert [at for at, _ in changes["j"]] == [T0 + 9_000, T0 + 30_000]
    assert [spec["paused"] for _, spec in changes["j"]] == [False, True]  # type: ignore[index]
    assert handled_at(log[2]) == T0 + 9_000
