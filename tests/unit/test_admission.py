"""The leader's admission control (schedb.admission): an executor that falls behind gets a
window of fires it may hold, found from its own pace; the plan hands nothing beyond it, and
what it holds back is caught up by the state machine's misfire rules, never lost or doubled."""

from __future__ import annotations

from typing import Any

from schedb.admission import CUT, OVERDUE_HIGH, OVERDUE_LOW, WINDOW_MIN, Admission, Load
from schedb.commands import AssignFires, CompleteFires, CreateJobs
from schedb.fire_queries import PlanInputs, load_of, plan_batch
from schedb.fsm.machine import StateMachine
from tests.unit.test_state import T0, at, cluster_state, ok, spec

LOOKAHEAD_S = 5.0
IN_FLIGHT = 512  # executor.max_inflight
HIGH, LOW = IN_FLIGHT + OVERDUE_HIGH, IN_FLIGHT + OVERDUE_LOW


def test_no_window_while_executors_keep_up() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second in range(10):
        admission.handed({"node2": 1_000})
        assert admission.observe({"node2": Load(5_000, HIGH - 1)}, float(second)) == []
    assert admission.windows() == {}


def test_long_calls_in_flight_are_not_a_backlog() -> None:
    """A webhook that takes minutes keeps its fire overdue while it runs in one of the
    executor's places: up to max_inflight such fires are no sign of falling behind."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second in range(10):
        assert admission.observe({"node2": Load(2 * IN_FLIGHT, IN_FLIGHT)}, float(second)) == []


def test_an_executor_behind_gets_the_window_of_its_pace_then_cuts_that_show() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    admission.observe({"node2": Load(10_000, 0)}, 0.0)
    admission.handed({"node2": 5_000})
    # It finished 2,000 in the second (10,000 + 5,000 handed - 13,000 held) and is behind.
    [change] = admission.observe({"node2": Load(13_000, HIGH)}, 1.0)
    assert change.window == 2_000 * (LOOKAHEAD_S + 1) and change.finished_per_s == 2_000
    assert admission.windows() == {"node2": 12_000}
    # Still behind a second later: the fires handed before the cut are still arriving.
    assert admission.observe({"node2": Load(12_000, 5 * HIGH)}, 2.0) == []
    # After the lookahead and its slack: cut again, by its pace (over PACE_S) or by CUT.
    admission.handed({"node2": 20_000})
    later = 2.0 + LOOKAHEAD_S + 1
    [cut] = admission.observe({"node2": Load(12_000, HIGH)}, later)
    assert cut.finished_per_s == round(20_000 / (later - 2.0), 1)  # since the newest sample PACE_S old
    assert cut.window == int(12_000 * CUT)  # its pace would allow more: skips flatter it


def test_a_window_grows_while_it_keeps_up_and_is_lifted_when_it_no_longer_binds() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    admission.observe({"node2": Load(1_000, 0)}, 0.0)
    admission.observe({"node2": Load(1_000, HIGH)}, 1.0)  # finished 0: the least window
    assert admission.windows() == {"node2": WINDOW_MIN}
    [grown] = admission.observe({"node2": Load(WINDOW_MIN, 0)}, 2.0)
    assert grown.window is not None and grown.window > WINDOW_MIN
    # Holding far less than its window, it keeps growing until the window is lifted.
    windows = [change.window for second in range(10)
               for change in admission.observe({"node2": Load(10, 0)}, 3.0 + second)]
    assert windows[-1] is None and len(windows) <= 8 and admission.windows() == {}


def test_an_executor_that_leaves_is_forgotten() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    admission.observe({"node2": Load(1_000, 0)}, 0.0)
    admission.observe({"node2": Load(1_000, HIGH)}, 1.0)
    assert admission.windows() == {"node2": WINDOW_MIN}
    admission.observe({"node3": Load(0, 0)}, 2.0)
    assert admission.windows() == {}


def jobs(count: int) -> StateMachine:
    """`count` jobs `@every 1s`, created at T0: all due at T0 + 1 s."""
    state = cluster_state()
    specs = [spec(f"j{n:03d}", schedule="@every 1s") for n in range(count)]
    assert all(r["error"] is None for r in at(state, CreateJobs(T0, specs))["results"])
    return state


def plan(state: StateMachine, now_ms: int, windows: dict[str, int]) -> Any:
    return plan_batch(state, PlanInputs(now_ms, 5_000, "node1", ["node2", "node3"], {}, False,
                                        lambda fire: "unstarted", None, 500, windows))


def test_the_plan_hands_no_executor_more_than_its_window_and_spills_to_one_with_room() -> None:
    state = jobs(40)
    batch = plan(state, T0 + 500, {"node2": 10})
    to = [item[2] for item in batch.items]
    assert to.count("node2") == 10 and to.count("node3") == len(to) - 10
    assert {item[0] for item in batch.items} == {f"j{n:03d}" for n in range(40)}  # every job, once


def test_with_no_room_anywhere_jobs_stay_in_their_slots_and_are_caught_up_as_missed() -> None:
    state = jobs(20)
    batch = plan(state, T0 + 500, {"node2": 5, "node3": 5})
    assert len(batch.items) == 10
    assert state.apply(AssignFires(T0 + 500, batch.items, leader_id="node1"))["assigned"] == 10
    held_back = {f"j{n:03d}" for n in range(20)} - {item[0] for item in batch.items}
    # The executors stay full: past the misfire grace, the jobs held back are caught up.
    late_ms = T0 + 1_000 + state.limits.misfire_grace_ms + 1_000
    batch = plan(state, late_ms, {"node2": 5, "node3": 5})
    assert {item[0] for item in batch.items} == held_back  # late ones go whatever the room
    result = state.apply(AssignFires(late_ms, batch.items, leader_id="node1"))
    assert result["assigned"] == 0  # missed (run_once places the latest occurrence to fire next)
    for job_id in held_back:  # each occurrence since, one record each
        missed = list(state.history[job_id])
        assert {m["status"] for m in missed} == {"missed"} and missed[0]["scheduled_ms"] == T0 + 1_000
        assert len(missed) >= state.limits.misfire_grace_ms // 1_000


def test_load_counts_the_fires_held_and_those_overdue() -> None:
    state = jobs(30)
    assert state.apply(AssignFires(T0 + 500, [[f"j{n:03d}", T0 + 1_000, "node2"] for n in range(30)],
                                   leader_id="node1"))["assigned"] == 30
    assert load_of(state, "node2", T0 + 1_500) == Load(30, 0)  # due, not yet overdue
    assert load_of(state, "node2", T0 + 2_000) == Load(30, 30)
    done = [ok(f"j{n:03d}:{T0 + 1_000}", at=T0 + 1_000) for n in range(10)]
    assert at(state, CompleteFires(T0 + 2_000, "node2", done))["committed"] == 10
    assert load_of(state, "node2", T0 + 2_000) == Load(20, 20)
    assert load_of(state, "node3", T0 + 2_000) == Load(0, 0)
