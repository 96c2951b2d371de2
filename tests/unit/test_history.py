"""The cluster-wide bound on execution history (issue 16, defect 10): history was bounded per job
only (100 records of ~0.7 KB a job: tens of GB at the default max_jobs). Now the cluster keeps at
most history_total_max records, the oldest go first across jobs, and each job keeps its last few."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given, settings

from schedb.commands import AssignFires, Command, CompleteFires, CreateJob, DeleteJob, SetLimits
from schedb.fsm import history
from schedb.fsm.limits import StateLimits, current
from schedb.fsm.machine import StateMachine
from tests.unit.test_determinism import commands
from tests.unit.test_state import T0, cluster_state, ok, spec

STALE_SLACK = 1_024  # schedb.fsm.history: how many stale index entries may wait beyond twice the records


def jobs_state(*job_ids: str, **limits: Any) -> StateMachine:
    state = cluster_state(StateLimits(**limits))
    for job_id in job_ids:
        assert state.apply(CreateJob(T0, spec(job_id)))["ok"]
    return state


def write(state: StateMachine, job_id: str, *offsets: int) -> None:
    """One record per offset, as an outcome's apply writes it (scheduled at T0 + offset)."""
    for offset in offsets:
        history.record(state, job_id, T0 + offset, 1, "node2", "succeeded", http_status=200)


def kept(state: StateMachine) -> dict[str, list[int]]:
    return {job_id: [e["scheduled_ms"] - T0 for e in ring] for job_id, ring in state.history.items()}


def index_size(state: StateMachine) -> int:
    return len(state.history_order)


def test_the_oldest_records_go_first_across_jobs_down_to_each_jobs_minimum() -> None:
    state = jobs_state("a", "b", "c", history_total_max=10, history_min_per_job=2)
    write(state, "a", *range(0, 6))
    write(state, "b", *range(100, 106))
    assert kept(state) == {"a": [2, 3, 4, 5], "b": list(range(100, 106))}
    write(state, "c", *range(200, 204))
    # a is down to its last two: b's oldest go next
    assert kept(state) == {"a": [4, 5], "b": [102, 103, 104, 105], "c": [200, 201, 202, 203]}
    write(state, "a", 6)
    assert kept(state) == {"a": [4, 5, 6], "b": [103, 104, 105], "c": [200, 201, 202, 203]}
    assert sum(len(ring) for ring in state.history.values()) == state.history_total == 10


def test_a_flood_of_one_job_leaves_every_other_job_its_last_few() -> None:
    state = jobs_state("a", "b", "c", "flood", history_total_max=20, history_min_per_job=3)
    for job_id in ("a", "b", "c"):
        write(state, job_id, 1, 2, 3, 4)
    write(state, "flood", *range(10, 2_010))
    assert kept(state) == {"a": [2, 3, 4], "b": [2, 3, 4], "c": [2, 3, 4], "flood": list(range(1_999, 2_010))}
    assert index_size(state) <= 2 * 20 + STALE_SLACK


def test_the_index_stays_bounded_when_rings_drop_their_oldest_on_their_own() -> None:
    # the cluster-wide bound is never reached: the rings overflow by themselves, and their
    # dropped records leave stale index entries behind
    state = jobs_state("a", "b", "c", history_per_job=5, history_total_max=1_000)
    for n in range(20_000):
        write(state, "abc"[n % 3], n)
    assert state.history_total == 15
    assert index_size(state) <= 2 * 15 + STALE_SLACK
    state.apply(DeleteJob(T0, "a"))
    write(state, "b", 20_000)
    assert state.history_total == 10 and index_size(state) <= 2 * 10 + STALE_SLACK


def test_a_job_created_again_under_a_deleted_ones_id_is_not_aged_by_its_entries() -> None:
    state = jobs_state("a", "b", history_total_max=10, history_min_per_job=1)
    write(state, "a", *range(8))
    assert state.apply(DeleteJob(T0, "a"))["ok"]
    write(state, "b", *range(100, 105))
    assert state.apply(CreateJob(T0, spec("a")))["ok"]
    write(state, "a", *range(200, 205))
    write(state, "b", 105)  # one over: b's oldest goes, not the new a's
    assert kept(state) == {"b": [101, 102, 103, 104, 105], "a": [200, 201, 202, 203, 204]}


def test_a_shorter_history_per_job_keeps_the_count_right() -> None:
    state = jobs_state("a", "b", history_total_max=10, history_min_per_job=1)
    write(state, "a", *range(5))
    write(state, "b", *range(100, 105))
    limits = {**current(state.limits), "history_per_job": 2}
    assert state.apply(SetLimits(T0, limits))["ok"]
    assert state.history_total == 4
    write(state, "a", *range(5, 11))  # 2 + 2 records: nothing more goes
    assert kept(state) == {"a": [9, 10], "b": [103, 104]}


def _outcomes_script() -> list[Command]:
    """Twelve jobs, each second assigned and (for most) completed: many records, rings overflowing."""
    script: list[Command] = [CreateJob(T0, spec(f"j{i}")) for i in range(12)]
    for second in range(1, 40):
        at_ms = T0 + second * 1000
        script.append(AssignFires(at_ms - 500, [[f"j{i}", at_ms, "node2"] for i in range(12)]))
        done = [ok(f"j{i}:{at_ms}", at=at_ms) for i in range(12) if (i * second) % 5 != 1]
        script.append(CompleteFires(at_ms + 10, "node2", done))
        if second == 20:
            script.append(DeleteJob(at_ms, "j3"))
    return script


def test_two_states_fed_the_same_commands_are_equal_and_survive_a_snapshot() -> None:
    limits = StateLimits(history_per_job=8, history_total_max=40, history_min_per_job=2)
    script = _outcomes_script()
    first, second = cluster_state(limits), cluster_state(limits)
    for command in script[:50]:
        assert first.apply(command) == second.apply(command)
    restored = pickle.loads(pickle.dumps(first))  # what pysyncobj's snapshot does
    assert restored.canonical_bytes() == first.canonical_bytes() == second.canonical_bytes()
    for command in script[50:]:
        first.apply(command)
        second.apply(command)
        restored.apply(command)
    assert restored.canonical_bytes() == first.canonical_bytes() == second.canonical_bytes()
    assert first.history_total == 40 and min(len(ring) for ring in first.history.values()) >= 2
    tampered = pickle.loads(pickle.dumps(first))
    tampered.history_order.rotate(1)
    assert tampered.canonical_bytes() != first.canonical_bytes()  # the index is part of the state's bytes


@settings(max_examples=60, deadline=None)
@given(script=commands())
def test_any_commands_keep_the_bound_and_the_index_consistent(script: list[Command]) -> None:
    limits = StateLimits(history_per_job=3, recent_executions=5, history_total_max=4, history_min_per_job=1)
    first, second = StateMachine(limits), StateMachine(limits)
    for command in script:
        assert first.apply(command) == second.apply(command)
    assert first.canonical_bytes() == second.canonical_bytes()
    assert first.history_total == sum(len(ring) for ring in first.history.values())
    assert first.history_total <= max(4, len(first.history))
    assert set(first.history) == set(first.history_next) and set(first.history) <= set(first.jobs)


def test_a_snapshot_from_before_the_bound_is_indexed_oldest_first() -> None:
    state = jobs_state("a", "b", history_total_max=6, history_min_per_job=1)
    state.now_ms = T0 + 10
    write(state, "b", 100)
    state.now_ms = T0 + 5
    write(state, "a", 0, 1)  # committed earlier than b's record
    data = dict(state.__dict__)
    for name in ("snapshot_version", "history_order", "history_next", "history_written", "history_total",
                 "catch_up_work"):
        del data[name]
    old_limits = StateLimits.__new__(StateLimits)  # pickled by a version without the newer bounds
    old_limits.__dict__.update({k: v for k, v in vars(state.limits).items()
                                if k not in ("history_total_max", "history_min_per_job")})
    data["limits"] = old_limits
    restored = StateMachine.__new__(StateMachine)
    restored.__setstate__(data)
    assert restored.limits.history_total_max == StateLimits().history_total_max
    assert list(restored.history_order) == [("a", 1), ("a", 2), ("b", 0)]
    assert restored.history_total == 3 and restored.catch_up_work == [0, 0]
    restored.limits = StateLimits(history_total_max=3, history_min_per_job=1)
    write(restored, "b", 101)  # the oldest across jobs goes: a's first
    assert kept(restored) == {"b": [100, 101], "a": [1]}


def test_by_default_the_whole_history_stays_within_a_few_hundred_megabytes() -> None:
    state = cluster_state()
    for n in range(100):  # 2,100 jobs with full rings: 210,000 records, ~150 MB
        for i in range(2_100):
            history.record(state, f"job{i}", T0 + n, 1, "node2", "succeeded", http_status=200)
    assert sum(len(ring) for ring in state.history.values()) == 200_000
    assert min(len(ring) for ring in state.history.values()) >= 5
