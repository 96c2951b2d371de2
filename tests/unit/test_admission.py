"""The leader's admission control (schedb.admission): an executor that falls behind gets a
window of fires it may hold, found from its own pace; the plan hands nothing beyond it, and
what it holds back is caught up by the state machine's misfire rules, never lost or doubled."""

from __future__ import annotations

from collections import Counter
from typing import Any

from schedb.admission import (
    CUT,
    DEPARTED_KEEP_S,
    FIRST_PACE_S,
    GROWTH,
    NEAR_CUT,
    OVERDUE_AFTER_MS,
    OVERDUE_HIGH,
    OVERDUE_LOW,
    SETTLE_S,
    UNBOUND_S,
    WINDOW_MIN_PER_PLACE,
    WINDOW_S,
    Admission,
    Load,
)
from schedb.commands import AssignFires, CompleteFires, CreateJobs, Outcome
from schedb.fire_queries import ASSIGN_BATCH_MAX, OVERDUE_SCAN_RUN, PlanInputs, load_of, plan_batch
from schedb.fsm.machine import StateMachine
from tests.unit.test_state import T0, at, cluster_state, ok, spec

LOOKAHEAD_S = 5.0
IN_FLIGHT = 512  # executor.max_inflight
WINDOW_MIN = WINDOW_MIN_PER_PLACE * IN_FLIGHT
NONE_FULL: frozenset[str] = frozenset()
HIGH, LOW = IN_FLIGHT + int(IN_FLIGHT * OVERDUE_HIGH), IN_FLIGHT + int(IN_FLIGHT * OVERDUE_LOW)


def test_no_window_while_executors_keep_up() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second in range(10):
        admission.handed({"node2": 1_000})
        assert admission.observe({"node2": Load(5_000, HIGH - 1)}, NONE_FULL, float(second)) == []
    assert admission.windows() == {}


def test_long_calls_in_flight_are_not_a_backlog() -> None:
    """A webhook that takes minutes keeps its fire overdue while it runs in one of the
    executor's places: up to max_inflight such fires are no sign of falling behind."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second in range(10):
        assert admission.observe({"node2": Load(2 * IN_FLIGHT, IN_FLIGHT)}, NONE_FULL, float(second)) == []


def behind_for(admission: Admission, seconds: int, held: int, finished_per_s: int, start: float = 0.0) -> list[Any]:
    """An executor behind for `seconds`, finishing finished_per_s and handed as many again."""
    changes = []
    for second in range(seconds + 1):
        admission.handed({"node2": finished_per_s} if second else {})
        changes += admission.observe({"node2": Load(held, HIGH)}, NONE_FULL, start + second)
    return changes


def test_a_stall_of_a_second_is_no_reason_for_a_window() -> None:
    """Across a leader change outcomes stall for a second or so: the pace reads ~0 and the
    overdue pile up. A first cut needs BEHIND_SAMPLES samples in a row and FIRST_PACE_S of pace."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    assert behind_for(admission, int(FIRST_PACE_S) - 1, 10_000, 0) == []
    [change] = behind_for(admission, 0, 10_000, 0, start=FIRST_PACE_S)
    assert change.window == WINDOW_MIN  # it finished none in all that time


def test_an_executor_behind_gets_the_window_of_its_pace_then_cuts_that_show() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    [change] = behind_for(admission, int(FIRST_PACE_S), 10_000, 2_000)
    assert change.finished_per_s == 2_000 and change.window == 2_000 * WINDOW_S
    assert admission.windows() == {"node2": 4_000}
    # Still behind: the fires handed before the cut are still arriving, for a lookahead.
    first = FIRST_PACE_S + 1
    assert behind_for(admission, int(LOOKAHEAD_S + SETTLE_S) - 2, 12_000, 3_000, start=first) == []
    # Then cut again, by its pace or by CUT, whichever is less: skips flatter the pace.
    [cut] = behind_for(admission, 0, 12_000, 3_000, start=first + LOOKAHEAD_S + SETTLE_S - 1)
    assert cut.window == int(4_000 * CUT)


def test_a_window_grows_while_it_keeps_up_and_is_lifted_once_it_no_longer_binds() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    behind_for(admission, int(FIRST_PACE_S), 1_000, 0)
    assert admission.windows() == {"node2": WINDOW_MIN}

    def keeping_up(seconds: range, full: frozenset[str]) -> list[int | None]:
        return [change.window for second in seconds
                for change in admission.observe({"node2": Load(10, 0)}, full, FIRST_PACE_S + second)]

    # Keeping up while plans run out of its room: it grows, and stays.
    bound = keeping_up(range(1, 10), frozenset({"node2"}))
    assert bound[0] == int(WINDOW_MIN * GROWTH) + 1 and None not in bound and len(bound) == 9
    # Past NEAR_CUT times the window of its cut it grows slowly: it fell behind around there.
    assert bound[-1] < bound[-2] * 1.1 and bound[-2] > NEAR_CUT * WINDOW_MIN
    # No plan ran out of its room for UNBOUND_S: lifted.
    windows = keeping_up(range(10, 20), NONE_FULL)
    assert windows[-1] is None and len(windows) == UNBOUND_S and admission.windows() == {}


def test_an_executor_that_leaves_keeps_its_window_for_a_while() -> None:
    """Overload makes a follower fall behind the log and drop out of the candidates: back
    within DEPARTED_KEEP_S it has its window still, not no limit at all."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    behind_for(admission, int(FIRST_PACE_S), 1_000, 0)
    assert admission.windows() == {"node2": WINDOW_MIN}
    gone = FIRST_PACE_S + 1
    assert admission.observe({"node3": Load(0, 0)}, NONE_FULL, gone) == []
    assert admission.observe({"node2": Load(1_000, HIGH)}, NONE_FULL, gone + 1) == []
    assert admission.windows() == {"node2": WINDOW_MIN}
    admission.observe({"node3": Load(0, 0)}, NONE_FULL, gone + 2)
    changes = admission.observe({"node3": Load(0, 0)}, NONE_FULL, gone + 2 + DEPARTED_KEEP_S)
    assert [(c.executor, c.window) for c in changes] == [("node2", None)] and admission.windows() == {}


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
    late = [item for item in batch.items if item[0] in held_back]
    assert {item[0] for item in late} == held_back  # catch-ups that only record go whatever the room
    result = state.apply(AssignFires(late_ms, late, leader_id="node1"))
    assert result["assigned"] == 0  # missed (run_once places the latest occurrence to fire next)
    for job_id in held_back:  # each occurrence since, one record each
        missed = list(state.history[job_id])
        assert {m["status"] for m in missed} == {"missed"} and missed[0]["scheduled_ms"] == T0 + 1_000
        assert len(missed) >= state.limits.misfire_grace_ms // 1_000


def test_load_counts_the_fires_held_and_those_overdue() -> None:
    state = jobs(30)
    assert state.apply(AssignFires(T0 + 500, [[f"j{n:03d}", T0 + 1_000, "node2"] for n in range(30)],
                                   leader_id="node1"))["assigned"] == 30
    assert load_of(state, "node2", T0 + OVERDUE_AFTER_MS) == Load(30, 0)  # due, not yet overdue
    assert load_of(state, "node2", T0 + 1_000 + OVERDUE_AFTER_MS) == Load(30, 30)
    done = [ok(f"j{n:03d}:{T0 + 1_000}", at=T0 + 1_000) for n in range(10)]
    assert at(state, CompleteFires(T0 + 2_000, "node2", done))["committed"] == 10
    assert load_of(state, "node2", T0 + 1_000 + OVERDUE_AFTER_MS) == Load(20, 20)
    assert load_of(state, "node3", T0 + 1_000 + OVERDUE_AFTER_MS) == Load(0, 0)


def test_a_retry_in_its_backoff_at_the_head_does_not_hide_the_overdue_behind_it() -> None:
    """Retries keep their early place in the executor's list while they wait: counted as
    neither overdue nor as the run of not-overdue fires that ends the count."""
    state = cluster_state()
    retrying = [spec(f"r{n:03d}", schedule="@every 1h", retry={"max_attempts": 3, "backoff_s": 600})
                for n in range(OVERDUE_SCAN_RUN + 10)]
    at(state, CreateJobs(T0, retrying))
    first_ms = state.jobs["r000"]["next_fire_ms"]
    at(state, AssignFires(first_ms - 1_000, [[j["id"], first_ms, "node2"] for j in retrying], leader_id="node1"))
    failed = [Outcome(f"{j['id']}:{first_ms}", 1, "failed", 500, first_ms, first_ms + 5).to_list() for j in retrying]
    assert at(state, CompleteFires(first_ms + 10, "node2", failed))["committed"] == len(retrying)
    assert state.counters["retries_scheduled"] == len(retrying)
    at(state, CreateJobs(first_ms + 20, [spec(f"j{n:03d}", schedule="@every 1s") for n in range(30)]))
    due_ms = state.jobs["j000"]["next_fire_ms"]
    at(state, AssignFires(due_ms - 500, [[f"j{n:03d}", due_ms, "node2"] for n in range(30)], leader_id="node1"))
    assert load_of(state, "node2", due_ms + OVERDUE_AFTER_MS) == Load(len(retrying) + 30, 30, len(retrying))


def test_under_a_lasting_overload_every_job_gets_its_turn() -> None:
    """Found by review: handing the room to the freshest occurrences first let the jobs that
    just fired win every time (520 of 1,000 jobs never fired); the room goes to the jobs that
    ran least recently."""
    state, fired = jobs(500), Counter[str]()
    for step in range(1, 600):  # a minute at the dispatch interval; each executor holds 15 at most
        now_ms = T0 + step * 100
        batch = plan(state, now_ms, {"node2": 15, "node3": 15})
        state.apply(AssignFires(now_ms, batch.items, batch.reassign, batch.release, leader_id="node1"))
        for node in ("node2", "node3"):  # each finishes what fell due 300 ms ago
            done = [f for f in state.book.of_node(node) if f["due_ms"] <= now_ms - 300]
            if done:
                at(state, CompleteFires(now_ms, node, [ok(f["fire_id"], f["attempt"], f["due_ms"]) for f in done]))
                fired.update(f["job_id"] for f in done)
    per_job = sorted(fired[f"j{n:03d}"] for n in range(500))
    # A job not served within a second of its due time waits for its catch-up: about a grace.
    assert per_job[0] >= per_job[-1] // 2, (per_job[:5], per_job[-5:])


def test_a_window_bounds_the_fires_not_yet_overdue_the_backlog_is_apart() -> None:
    """Fires an executor lets go to their lease (too late to call) stay overdue for half a
    minute: counted against its window they would leave it no room, and it would fall further
    behind the more it is behind."""
    state = jobs(40)
    assert state.apply(AssignFires(T0 + 500, [[f"j{n:03d}", T0 + 1_000, "node2"] for n in range(20)],
                                   leader_id="node1"))["assigned"] == 20
    now_ms = T0 + 1_000 + OVERDUE_AFTER_MS  # the 20 are overdue; the other 20 jobs are due
    batch = plan(state, now_ms, {"node2": 10, "node3": 0})
    assert [item[2] for item in batch.items].count("node2") == 10 and batch.full == {"node2", "node3"}


def test_one_look_behind_is_not_enough_for_a_cut() -> None:
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second in range(4):
        assert admission.observe({"node2": Load(5_000, 0)}, NONE_FULL, float(second)) == []
    assert admission.observe({"node2": Load(5_000, HIGH)}, NONE_FULL, 4.0) == []
    assert admission.observe({"node2": Load(5_000, 0)}, NONE_FULL, 5.0) == []  # it caught up
    assert admission.observe({"node2": Load(5_000, HIGH)}, NONE_FULL, 6.0) == []
    assert [c.executor for c in admission.observe({"node2": Load(5_000, HIGH)}, NONE_FULL, 7.0)] == ["node2"]


def test_an_executor_back_among_the_candidates_is_measured_afresh_before_a_cut() -> None:
    """Its outcomes may not have flushed yet on its first look back: no cut on that look, nor
    from the pace it had before it left."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    behind_for(admission, int(FIRST_PACE_S), 50_000, 20_000)  # window 40,000
    admission.observe({"node3": Load(0, 0)}, NONE_FULL, 10.0)  # node2 is gone for a while
    back = [admission.observe({"node2": Load(50_000, HIGH)}, NONE_FULL, 11.0 + s) for s in range(2)]
    assert back == [[], []] and admission.windows() == {"node2": 40_000}


def test_the_assign_result_names_the_fires_each_node_was_given() -> None:
    state = jobs(3)
    items = [["j000", T0 + 1_000, "node2"], ["j001", T0 + 1_000, "node3"], ["j002", T0 + 1_000, "node3"],
             ["j002", T0 + 1_000, "node2"]]  # the last is stale: j002's occurrence is taken
    assert state.apply(AssignFires(T0 + 500, items, leader_id="node1"))["given"] == {"node2": 1, "node3": 2}


def test_a_plan_never_exceeds_the_batch_bound() -> None:
    state = jobs(300)  # left unassigned past their grace: catch-ups, besides 2,000 jobs due now
    late_ms = T0 + 1_000 + state.limits.misfire_grace_ms + 1_000
    for first in range(0, 2_000, 500):
        specs = [spec(f"k{n:04d}", schedule="@every 1s") for n in range(first, first + 500)]
        at(state, CreateJobs(late_ms - 900, specs))
    batch = plan(state, late_ms, {"node2": 10_000, "node3": 10_000})
    assert len(batch.items) == ASSIGN_BATCH_MAX
    assert state.apply(AssignFires(late_ms, batch.items, leader_id="node1"))["ok"]



def test_an_executor_working_off_its_backlog_by_itself_is_left_to_it() -> None:
    """At its limit, a slow second or a burst leaves an executor with many overdue fires that it
    works off on its own: a cut then would only turn late fires into missed ones."""
    admission = Admission(LOOKAHEAD_S, IN_FLIGHT)
    for second, overdue in enumerate([0, 0, 0, 3 * HIGH, 2 * HIGH, HIGH + 10, HIGH, LOW]):
        assert admission.observe({"node2": Load(9_000, overdue)}, NONE_FULL, float(second)) == []


def test_with_no_room_a_catch_up_that_only_records_goes_one_that_fires_waits() -> None:
    """Found by review: catch-ups of jobs one occurrence behind (or run_all) fire, and went
    whatever the room; those that only record what was missed must go even with none, or the
    jobs would stay stuck past their grace."""
    state = cluster_state()
    at(state, CreateJobs(T0, [spec("every-second", schedule="@every 1s"),
                              spec("every-minute", schedule="@every 60s"),
                              spec("run-all", schedule="@every 1s", misfire="run_all")]))
    late_ms = T0 + 60_000 + state.limits.misfire_grace_ms + 1_000
    batch = plan(state, late_ms, {"node2": 0, "node3": 0})
    assert [item[0] for item in batch.items] == ["every-second"]
    batch = plan(state, late_ms, {"node2": 5, "node3": 5})
    assert sorted(item[0] for item in batch.items) == ["every-minute", "every-second", "run-all"]
