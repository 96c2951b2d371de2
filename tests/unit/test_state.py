"""The state machine driven by commands with a fake `now`: no Raft, no sleeps."""

from __future__ import annotations

from typing import Any

from schedb.commands import (
    AssignFires,
    Command,
    CompleteFires,
    CreateJob,
    CreateJobs,
    DeleteJob,
    Outcome,
    RegisterNode,
    ReplaceJob,
)
from schedb.fsm.limits import StateLimits
from schedb.fsm.machine import StateMachine
from schedb.jobspec import validate_job

T0 = 1_800_000_000_000  # a whole second


def spec(job_id: str = "job", schedule: str = "@every 1s", **extra: Any) -> dict[str, Any]:
    return validate_job({"id": job_id, "schedule": schedule, "webhook": {"url": "http://127.0.0.1/h"}, **extra})


def cluster_state(limits: StateLimits | None = None) -> StateMachine:
    state = StateMachine(limits)
    # The leader's clock tick (a leader of this version names itself): from now on only the
    # leader moves replicated time.
    state.apply(AssignFires(T0, [], leader_id="node1"))
    for n in (2, 3):
        assert state.apply(RegisterNode(T0, f"node{n}", f"127.0.0.1:900{n}", f"127.0.0.1:800{n}")) == {"ok": True}
    return state


def at(state: StateMachine, command: Command) -> dict[str, Any]:
    """Apply a command as a node proposes it at its time, after the leader's tick of that time
    (only the leader's AssignFires moves replicated time; schedb.fsm.replicated_time)."""
    state.apply(AssignFires(command.now_ms, [], leader_id="node1"))
    return state.apply(command)


def ok(outcome_fire: str, attempt: int = 1, at: int = T0) -> list[Any]:
    return Outcome(outcome_fire, attempt, "succeeded", 200, at, at + 5).to_list()


def test_create_puts_the_job_in_the_slot_of_its_first_fire() -> None:
    state = cluster_state()
    assert state.apply(CreateJob(T0 + 300, spec())) == {"ok": True, "job_id": "job"}
    assert state.jobs["job"]["next_fire_ms"] == T0 + 1000
    assert state.due_jobs(T0 + 999, 10) == []
    assert state.due_jobs(T0 + 5000, 10) == [("job", T0 + 1000)]
    assert state.apply(CreateJob(T0 + 400, spec()))["error"] == "conflict"


def test_apply_rejects_an_invalid_spec_and_changes_nothing() -> None:
    state = cluster_state()
    before = state.canonical_bytes()
    result = state.apply(CreateJob(T0, {"id": "x", "schedule": "nope", "webhook": {"url": "http://a/"}}))
    assert result["error"] == "invalid" and result["errors"][0]["field"] == "schedule"
    assert state.jobs == {} and state.counters["commands_rejected"] == 1
    assert state.canonical_bytes() != before  # only the clock, the apply count and the counter moved
    assert state.slots.keys == []


def test_assign_creates_a_fire_and_advances_the_job() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    result = state.apply(AssignFires(T0 + 10, [["job", T0 + 1000, "node2"], ["job", T0 + 2000, "node3"]]))
    assert result == {"ok": True, "assigned": 2, "reassigned": 0, "throttled": 0,
                      "given": {"node2": 1, "node3": 1}}
    assert [f["fire_id"] for f in state.book.of_node("node2")] == [f"job:{T0 + 1000}"]
    assert [f["fire_id"] for f in state.book.of_node("node3")] == [f"job:{T0 + 2000}"]
    assert state.jobs["job"]["next_fire_ms"] == T0 + 3000
    assert state.jobs["job"]["active_fires"] == [T0 + 1000, T0 + 2000]


def test_stale_assignments_are_no_ops() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    snapshot = state.canonical_bytes()
    # a second leader proposing the same fire, an unknown node, an unknown job, garbage
    items = [["job", T0 + 1000, "node3"], ["job", T0 + 2000, "node9"], ["ghost", T0, "node2"], "junk", [1, 2]]
    assert state.apply(AssignFires(T0, items)) == {"ok": True, "assigned": 0, "reassigned": 0, "throttled": 0,
                                                   "given": {}}
    assert state.counters["assign_stale"] == 5
    assert len(state.book.fires) == 1 and state.jobs["job"]["next_fire_ms"] == T0 + 2000
    assert snapshot != state.canonical_bytes()


def test_completion_records_history_once() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    fire_id = f"job:{T0 + 1000}"
    assert state.apply(CompleteFires(T0 + 1100, "node2", [ok(fire_id, at=T0 + 1000)])) == {"ok": True, "committed": 1}
    assert state.apply(CompleteFires(T0 + 1200, "node2", [ok(fire_id, at=T0 + 1000)])) == {"ok": True, "committed": 0}
    assert state.counters["duplicate_completions"] == 1
    (execution,) = state.history["job"]
    assert execution["fire_id"] == fire_id and execution["node"] == "node2" and execution["duration_ms"] == 5
    assert state.book.fires == {} and state.book.by_node == {} and state.jobs["job"]["active_fires"] == []
    assert list(state.recent) == [execution]


def test_completion_of_a_wrong_attempt_or_bad_row_is_ignored() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    fire_id = f"job:{T0 + 1000}"
    bad = [ok(fire_id, attempt=2), [fire_id, 1, "exploded", 0, 0, 0, ""], [fire_id], "junk"]
    assert state.apply(CompleteFires(T0, "node2", bad)) == {"ok": True, "committed": 0}
    assert fire_id in state.book.fires
    assert state.apply(CompleteFires(T0, "node9", [ok(fire_id)]))["error"] == "invalid"


def test_history_is_bounded_per_job_and_overall() -> None:
    state = cluster_state(StateLimits(history_per_job=3, recent_executions=4))
    state.apply(CreateJob(T0, spec("a")))
    state.apply(CreateJob(T0, spec("b")))
    for i in range(1, 6):
        scheduled = T0 + 1000 * i
        state.apply(AssignFires(scheduled - 500, [["a", scheduled, "node2"], ["b", scheduled, "node3"]]))
        state.apply(CompleteFires(scheduled, "node2", [ok(f"a:{scheduled}")]))
        state.apply(CompleteFires(scheduled, "node3", [ok(f"b:{scheduled}")]))
    assert [e["scheduled_ms"] for e in state.history["a"]] == [T0 + 3000, T0 + 4000, T0 + 5000]
    assert len(state.recent) == 4


def test_pause_drops_fires_not_yet_due_and_resume_applies_the_misfire_policy() -> None:
    state = cluster_state()
    at(state, CreateJob(T0, spec()))
    at(state, AssignFires(T0 + 100, [["job", T0 + 1000, "node2"], ["job", T0 + 2000, "node2"]]))
    at(state, AssignFires(T0 + 200, [["job", T0 + 3000, "node2"], ["job", T0 + 4000, "node2"]]))
    at(state, ReplaceJob(T0 + 1500, spec(paused=True)))
    # Due already, or within the slack (an executor a little ahead may have started them): they go ahead.
    assert list(state.book.fires) == [f"job:{T0 + ms}" for ms in (1000, 2000)]
    assert list(state.book.withdrawn) == [f"job:{T0 + ms}" for ms in (3000, 4000)]
    assert state.jobs["job"]["next_fire_ms"] is None and state.slots.keys == []
    at(state, ReplaceJob(T0 + 9_400, spec(paused=False)))
    # run_once: the latest occurrence due while paused fires once; 3 s (taken back) .. 8 s are skipped.
    assert state.jobs["job"]["next_fire_ms"] == T0 + 9_000
    skipped = [(e["scheduled_ms"] - T0, e["status"], e["reason"]) for e in state.history["job"]]
    assert skipped == [(ms, "skipped", "skipped_paused") for ms in range(3000, 9000, 1000)]
    assert state.jobs["job"]["version"] == 3 and state.counters["fires_skipped"] == 6


def test_resume_with_skip_waits_for_the_next_occurrence() -> None:
    state = cluster_state()
    at(state, CreateJob(T0, spec(misfire="skip", paused=True)))
    at(state, ReplaceJob(T0 + 5_500, spec(misfire="skip")))
    assert state.jobs["job"]["next_fire_ms"] == T0 + 6_000 and len(state.history["job"]) == 5


def test_outcome_of_a_fire_withdrawn_while_it_ran_is_recorded_once() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(schedule="@every 5s")))
    state.apply(AssignFires(T0, [["job", T0 + 5000, "node2"]]))
    state.apply(ReplaceJob(T0 + 2999, spec(schedule="@every 5s", paused=True)))  # the executor ran it anyway
    assert state.book.fires == {}
    fire_id = f"job:{T0 + 5000}"
    assert at(state, CompleteFires(T0 + 5010, "node2", [ok(fire_id, at=T0 + 5000)]))["committed"] == 1
    assert at(state, CompleteFires(T0 + 5020, "node2", [ok(fire_id, at=T0 + 5000)]))["committed"] == 0
    assert [e["fire_id"] for e in state.history["job"]] == [fire_id] and state.book.withdrawn == {}
    # Resumed, the job does not fire that instant again: it was decided.
    at(state, ReplaceJob(T0 + 5030, spec(schedule="@every 5s")))
    assert state.jobs["job"]["next_fire_ms"] == T0 + 10_000


def test_a_fire_due_within_the_slack_of_a_pause_goes_ahead_once() -> None:
    """Reviewer's case: the pause reached the state (leader time) just before the instant while
    an executor whose clock is a little ahead had already called the webhook."""
    state = cluster_state()
    at(state, CreateJob(T0, spec()))
    state.apply(AssignFires(T0 + 100, [["job", T0 + 1000, "node2"]]))
    at(state, ReplaceJob(T0 + 700, spec(paused=True)))
    assert list(state.book.fires) == [f"job:{T0 + 1000}"] and state.book.withdrawn == {}
    at(state, CompleteFires(T0 + 1010, "node2", [ok(f"job:{T0 + 1000}", at=T0 + 1000)]))
    at(state, ReplaceJob(T0 + 1500, spec()))  # resumed: T0+1000 is not placed again
    assert state.jobs["job"]["next_fire_ms"] == T0 + 2000
    assert [e["scheduled_ms"] for e in state.history["job"]] == [T0 + 1000]


def test_replace_checks_the_version_and_keeps_timing_when_unchanged() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    assert state.apply(ReplaceJob(T0, spec(tags={"a": "b"}), if_version=7))["error"] == "precondition_failed"
    assert state.apply(ReplaceJob(T0, spec(tags={"a": "b"}), if_version=1))["ok"]
    assert state.jobs["job"]["next_fire_ms"] == T0 + 2000 and len(state.book.fires) == 1
    assert state.apply(ReplaceJob(T0, spec("ghost")))["error"] == "not_found"


def test_delete_removes_job_slot_and_fires() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    assert state.apply(DeleteJob(T0, "job", if_version=2))["error"] == "precondition_failed"
    assert state.apply(DeleteJob(T0, "job"))["ok"]
    assert state.jobs == {} and state.book.fires == {} and state.slots.keys == [] and state.history == {}
    assert state.apply(DeleteJob(T0, "job"))["error"] == "not_found"


def test_misfire_policies_after_the_cluster_was_down() -> None:
    """Down for 60 s: run_once fires the latest occurrence, skip none, run_all all in the window."""
    later = T0 + 60_000
    results = {}
    for policy in ("run_once", "skip", "run_all"):
        state = cluster_state(StateLimits(catch_up_window_ms=30_000))
        state.apply(CreateJob(T0, spec(misfire=policy)))
        state.apply(AssignFires(later, [["job", T0 + 1000, "node2"]]))  # the leader's first try: missed
        (job_id, first), = state.due_jobs(later + 5_000, 10)
        state.apply(AssignFires(later, [[job_id, first, "node2"]]))
        statuses = [e["status"] for e in state.history["job"]]
        results[policy] = (first - T0, len(state.book.fires), statuses.count("missed"), state.counters["fires_missed"])
    assert results["run_once"] == (60_000, 1, 59, 59)
    assert results["skip"] == (61_000, 1, 60, 60)  # the next occurrence after now
    assert results["run_all"] == (30_000, 1, 29, 29)


def test_one_shot_job_leaves_the_slots_after_its_fire() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(schedule="@at 2027-02-01T08:00:00.000Z")))
    at_ms = state.jobs["job"]["next_fire_ms"]
    state.apply(AssignFires(at_ms - 1000, [["job", at_ms, "node3"]]))
    assert state.jobs["job"]["next_fire_ms"] is None and state.slots.keys == []


def test_clock_never_goes_backwards() -> None:
    state = cluster_state()
    at(state, CreateJob(T0 + 5000, spec("a")))
    state.apply(AssignFires(T0 + 4000, []))  # a leader whose clock is a little behind the last one
    state.apply(CreateJob(T0, spec("b")))  # a node with a slower clock proposed this
    assert state.now_ms == T0 + 5000 and state.jobs["b"]["created_ms"] == T0 + 5000


def test_only_the_leaders_assignments_move_replicated_time() -> None:
    """Defect 3 of issue 16: a node an hour ahead moved replicated time for good (even by a
    rejected outcome batch), and every job then counted as missed on the next assignment."""
    state = cluster_state()
    hour_ms = 3_600_000
    rejected = state.apply(CompleteFires(T0 + hour_ms, "ghost", []))
    assert rejected["error"] == "invalid" and state.now_ms == T0
    assert state.apply(CompleteFires(T0 + hour_ms, "node2", []))["ok"] and state.now_ms == T0
    assert state.apply(CreateJob(T0 + hour_ms, spec("ahead")))["ok"]  # at replicated time: fires at once
    assert state.jobs["ahead"]["created_ms"] == T0 and state.jobs["ahead"]["next_fire_ms"] == T0 + 1000
    assert state.now_ms == T0
    state.apply(CreateJob(T0 + 600, spec("slightly-ahead")))  # within the bound: its own time, once
    assert state.jobs["slightly-ahead"]["created_ms"] == T0 + 600 and state.now_ms == T0
    assert state.jobs["slightly-ahead"]["next_fire_ms"] == T0 + 1000
    state.apply(AssignFires(T0 + 1000, [["slightly-ahead", T0 + 1000, "node2"]]))
    assert state.now_ms == T0 + 1000 and state.counters["fires_missed"] == 0


def test_a_log_of_an_older_version_replays_as_it_applied_then() -> None:
    """Before the first tick of a leader that names itself, time moves as it did before
    (the largest now_ms seen): an older journal replays to the state it had, and a command of
    a new cluster's first moments gets its own time, not 0."""
    state = StateMachine()
    state.apply(RegisterNode(T0, "node2", "127.0.0.1:9002", "127.0.0.1:8002"))
    state.apply(CreateJob(T0 + 500, spec("early")))
    assert state.now_ms == T0 + 500 and state.jobs["early"]["created_ms"] == T0 + 500
    state.apply(AssignFires(T0 + 600, [], leader_id="node1"))
    state.apply(CreateJob(T0 + 3_600_000, spec("ahead")))
    assert state.now_ms == T0 + 600 and state.jobs["ahead"]["created_ms"] == T0 + 600


def test_due_jobs_walks_slots_in_time_order_with_a_limit() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec("slow", "@every 10s")))
    state.apply(CreateJob(T0, spec("fast", "@every 1s")))
    state.apply(CreateJob(T0, spec("mid", "@every 5s")))
    assert state.due_jobs(T0 + 10_000, 10) == [("fast", T0 + 1000), ("mid", T0 + 5000), ("slow", T0 + 10_000)]
    assert state.due_jobs(T0 + 10_000, 2) == [("fast", T0 + 1000), ("mid", T0 + 5000)]


def test_node_registration_rejects_a_stolen_raft_address() -> None:
    state = cluster_state()
    result = state.apply(RegisterNode(T0, "impostor", "127.0.0.1:9002", "127.0.0.1:8009"))
    assert result["error"] == "conflict"
    assert state.apply(RegisterNode(T0, "node2", "127.0.0.1:9002", "127.0.0.1:8012")) == {"ok": True}
    assert state.nodes["node2"]["http_addr"] == "127.0.0.1:8012"


def test_a_full_slot_refuses_new_jobs() -> None:
    state = cluster_state(StateLimits(slot_jobs_max=2))
    assert state.apply(CreateJob(T0, spec("a")))["ok"]
    assert state.apply(CreateJob(T0, spec("b")))["ok"]
    assert state.apply(CreateJob(T0, spec("c")))["error"] == "slot_full"
    assert state.apply(CreateJob(T0, spec("d", schedule="@every 7s")))["ok"]  # another second
    assert state.apply(ReplaceJob(T0, spec("d")))["error"] == "slot_full"


def test_a_command_with_a_bad_clock_is_rejected_without_change() -> None:
    state = cluster_state()
    before = (state.now_ms, dict(state.jobs))
    assert state.apply(CreateJob("soon", spec()))["error"] == "invalid"  # type: ignore[arg-type]
    assert (state.now_ms, state.jobs) == before and state.counters["commands_rejected"] == 1


def test_bulk_create_reports_each_job_and_bounds_the_batch() -> None:
    state = cluster_state(StateLimits(bulk_create_max=3))
    state.apply(CreateJob(T0, spec("taken")))
    result = state.apply(CreateJobs(T0, [spec("a"), spec("taken"), {"id": "bad"}]))
    assert [(r["job_id"], r["error"]) for r in result["results"]] == [("a", None), ("taken", "conflict"),
                                                                      ("bad", "invalid")]
    assert set(state.jobs) == {"a", "taken"} and state.jobs["a"]["next_fire_ms"] == T0 + 1000
    assert state.apply(CreateJobs(T0, [spec(f"j{i}") for i in range(4)]))["error"] == "invalid"
    assert state.apply(CreateJobs(T0, "not a list"))["error"] == "invalid"  # type: ignore[arg-type]
