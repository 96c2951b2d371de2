"""Job dependencies and their runs in the state machine (no Raft, fake time)."""

from __future__ import annotations

from typing import Any

from schedb.commands import (
    AssignFires,
    CompleteFires,
    CreateJob,
    DeleteJob,
    Outcome,
    ReplaceJob,
    ReplayDeadLetter,
    TriggerJob,
)
from schedb.fsm.machine import StateMachine
from schedb.jobspec import validate_job
from tests.unit.test_state import T0, cluster_state


def job(job_id: str, *upstreams: str, rule: str = "all_succeeded", **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": job_id, "webhook": {"url": "http://127.0.0.1/h"}, "retry": {"max_attempts": 1},
                           **extra}
    if upstreams:
        raw.update(depends_on=list(upstreams), trigger_rule=rule)
    else:
        raw.setdefault("schedule", "@yearly")
    return validate_job(raw)


def diamond(rule: str = "all_succeeded") -> StateMachine:
    state = cluster_state()
    for spec in (job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c", rule=rule)):
        assert state.apply(CreateJob(T0, spec))["ok"], spec
    return state


def finish(state: StateMachine, job_id: str, status: str = "succeeded", at: int = T0 + 100) -> str:
    """Hand the job's pending fire to node2 and report its outcome; returns the fire id."""
    fire = next(f for f in state.book.fires.values() if f["job_id"] == job_id)
    state.apply(AssignFires(at, [], reassign=[[fire["fire_id"], fire["attempt"], "node2"]]))
    row = Outcome(fire["fire_id"], fire["attempt"], status, 200 if status == "succeeded" else 500, at, at + 5)
    assert state.apply(CompleteFires(at + 10, "node2", [row.to_list()]))["committed"] == 1
    return fire["fire_id"]


def pending_jobs(state: StateMachine) -> list[str]:
    return sorted(f["job_id"] for f in state.book.fires.values())


def test_a_diamond_runs_d_once_after_b_and_c_with_one_run_id() -> None:
    state = diamond()
    run_id = state.apply(TriggerJob(T0, "a"))["fire_id"]
    assert state.book.fires[run_id]["run_id"] == run_id and pending_jobs(state) == ["a"]
    finish(state, "a")
    assert pending_jobs(state) == ["b", "c"]
    finish(state, "b")
    assert pending_jobs(state) == ["c"]  # d waits for c
    finish(state, "c")
    assert pending_jobs(state) == ["d"]
    assert all(f["run_id"] == run_id and f["trigger"] == f"dependency:{run_id}" for f in state.book.fires.values())
    finish(state, "d")
    run = state.runs[run_id]
    assert {k: v["status"] for k, v in run["steps"].items()} == dict.fromkeys("abcd", "succeeded")
    assert run["finished_ms"] is not None and state.counters["dependency_fires"] == 3


def test_a_failed_upstream_marks_the_downstream_upstream_failed() -> None:
    state = diamond()
    run_id = state.apply(TriggerJob(T0, "a"))["fire_id"]
    finish(state, "a")
    finish(state, "b")
    finish(state, "c", "failed")
    assert pending_jobs(state) == []
    assert state.runs[run_id]["steps"]["d"]["status"] == "upstream_failed"
    (record,) = state.history["d"]
    assert record["status"] == "upstream_failed" and record["trigger"] == f"dependency:{run_id}"
    assert state.runs[run_id]["finished_ms"] is not None


def test_all_done_and_any_succeeded_rules() -> None:
    state = diamond("all_done")
    state.apply(TriggerJob(T0, "a"))
    finish(state, "a")
    finish(state, "b", "failed")
    finish(state, "c")
    assert pending_jobs(state) == ["d"]  # all done, whatever the outcome
    state = diamond("any_succeeded")
    state.apply(TriggerJob(T0, "a"))
    finish(state, "a")
    finish(state, "b")
    assert pending_jobs(state) == ["c", "d"]  # one success is enough; c still runs


def test_cycles_and_unknown_upstreams_are_refused_naming_the_jobs() -> None:
    state = diamond()
    result = state.apply(ReplaceJob(T0, job("a", "d")))
    assert result["error"] == "invalid" and "a → d → b → a" in result["detail"]
    assert state.apply(CreateJob(T0, job("e", "ghost")))["error"] == "invalid"
    assert state.jobs["a"]["spec"]["depends_on"] == []


def test_a_job_others_depend_on_is_deleted_only_with_force() -> None:
    state = diamond()
    assert state.apply(DeleteJob(T0, "b"))["error"] == "conflict"
    assert state.apply(DeleteJob(T0, "b", force=True))["ok"]
    assert state.jobs["d"]["spec"]["depends_on"] == ["c"] and state.jobs["d"]["version"] == 2
    assert state.dependents == {"a": ["c"], "c": ["d"]}


def test_a_manual_run_is_refused_while_one_is_in_progress_unless_forced() -> None:
    state = diamond()
    state.apply(TriggerJob(T0, "a"))
    finish(state, "a")
    assert state.apply(TriggerJob(T0 + 200, "a"))["error"] == "conflict"  # its run is not over
    forced = state.apply(TriggerJob(T0 + 200, "a", params={"day": "2026-11-26"}, force=True))
    assert state.book.fires[forced["fire_id"]]["params"] == {"day": "2026-11-26"}
    assert state.apply(TriggerJob(T0 + 200, "b", params={"x": "y" * 5000}, force=True))["error"] == "invalid"


def test_a_dependent_without_a_schedule_never_fires_on_its_own() -> None:
    state = diamond()
    assert state.jobs["d"]["spec"]["schedule"] is None and state.jobs["d"]["next_fire_ms"] is None
    assert state.due_jobs(T0 + 10 ** 12, 10) == [("a", state.jobs["a"]["next_fire_ms"])]


def test_pausing_a_waiting_step_skips_it_and_the_run_goes_on() -> None:
    state = diamond("all_done")
    run_id = state.apply(TriggerJob(T0, "a"))["fire_id"]
    finish(state, "a")
    paused = {**state.jobs["b"]["spec"], "paused": True}
    assert state.apply(ReplaceJob(T0 + 200, paused))["ok"]  # b's pending step is taken back
    finish(state, "c", at=T0 + 300)
    assert state.runs[run_id]["steps"]["b"]["status"] == "skipped" and pending_jobs(state) == ["d"]


def test_a_run_finishes_when_a_waiting_step_is_deleted_or_loses_its_upstream() -> None:
    state = diamond()
    run_id = state.apply(TriggerJob(T0, "a"))["fire_id"]
    assert state.apply(DeleteJob(T0 + 50, "d"))["ok"]
    for name in "abc":
        finish(state, name)
    assert state.runs[run_id]["steps"]["d"]["status"] == "deleted" and state.runs[run_id]["finished_ms"]
    assert state.apply(TriggerJob(T0 + 500, "a"))["ok"]  # no run of it left in progress


def test_a_replayed_root_starts_a_run_of_its_own_and_old_steps_do_not_count_in_it() -> None:
    state = cluster_state()
    for spec in (job("a"), job("b", "a", rule="all_done"), job("c", "b")):
        assert state.apply(CreateJob(T0, spec))["ok"]
    first = state.apply(TriggerJob(T0, "a"))["fire_id"]
    finish(state, "a", "failed")  # dead-lettered; b still runs (all_done)
    old_b = next(f for f in state.book.fires.values() if f["job_id"] == "b")
    assert state.apply(ReplayDeadLetter(T0 + 200, first))["ok"]
    replay_run = next(r for r in state.runs if r != first)
    assert replay_run.startswith(first + "~")
    row = Outcome(old_b["fire_id"], 1, "succeeded", 200, T0 + 300, T0 + 305)
    state.apply(AssignFires(T0 + 300, [], reassign=[[old_b["fire_id"], 1, "node2"]]))
    state.apply(CompleteFires(T0 + 310, "node2", [row.to_list()]))
    assert state.runs[replay_run]["steps"]["b"]["status"] == "waiting"  # the old b is the first run's


def test_a_paused_step_is_skipped_and_a_withdrawn_root_cancels_its_run() -> None:
    state = diamond("all_done")
    assert state.apply(ReplaceJob(T0, {**state.jobs["b"]["spec"], "paused": True}))["ok"]
    run_id = state.apply(TriggerJob(T0, "a"))["fire_id"]
    finish(state, "a")
    assert state.runs[run_id]["steps"]["b"]["status"] == "skipped" and state.history["b"][0]["reason"] == "paused"
    assert pending_jobs(state) == ["c"]
    state = diamond()
    every = {**state.jobs["a"]["spec"], "schedule": "@every 10s"}
    assert state.apply(ReplaceJob(T0, every))["ok"]
    state.apply(AssignFires(T0 + 6000, [["a", T0 + 10_000, "node2"]]))  # handed out ahead of time
    assert len(state.runs) == 1
    assert state.apply(ReplaceJob(T0 + 6100, {**every, "paused": True}))["ok"]
    assert state.runs == {} and "b" not in state.history  # the run never happened


def test_a_forced_delete_may_not_strand_a_dependent_without_a_schedule() -> None:
    state = cluster_state()
    for spec in (job("a"), job("b", "a")):
        state.apply(CreateJob(T0, spec))
    assert "neither a schedule" in state.apply(DeleteJob(T0, "a", force=True))["detail"]
