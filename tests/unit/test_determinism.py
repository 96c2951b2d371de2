"""Two state machines fed the same commands end byte-identical (and survive a snapshot)."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schedb.commands import (
    AssignFires,
    Command,
    CompleteFires,
    CreateJob,
    CreateJobs,
    DeleteJob,
    DropDeadLetter,
    Outcome,
    RegisterNode,
    ReplaceJob,
    ReplayDeadLetter,
    TriggerJob,
    decode,
    encode,
)
from schedb.fsm.limits import StateLimits
from schedb.fsm.machine import StateMachine

T0 = 1_800_000_000_000
JOB_IDS = st.sampled_from(["a", "b", "c", "d"])
NODES = st.sampled_from(["node2", "node3", "node9"])
SCHEDULES = st.sampled_from(["@every 1s", "@every 3s", "*/2 * * * * *", "0 * * * *", "@hourly"])


# A job's own breaker settings (spec["breaker"]): none, some, and a bad one (the command is refused).
BREAKERS = st.sampled_from([None, {"failures": 2}, {"enabled": False}, {"cooldown_s": 5, "failure_rate": 0.3},
                            {"failures": 0}])


def _spec(job_id: str, schedule: str, paused: bool, breaker: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"id": job_id, "schedule": schedule, "paused": paused, "webhook": {"url": "http://127.0.0.1/h"}}
    return spec if breaker is None else {**spec, "breaker": breaker}


@st.composite
def commands(draw: st.DrawFn) -> list[Command]:
    out: list[Command] = [RegisterNode(T0, "node2", "127.0.0.1:9002", "h2"),
                          RegisterNode(T0, "node3", "127.0.0.1:9003", "h3")]
    now = T0
    for _ in range(draw(st.integers(1, 60))):
        now += draw(st.integers(-500, 3000))  # clocks may disagree: the state clamps
        kind = draw(st.integers(0, 8))
        job_id = draw(JOB_IDS)
        if kind == 0 and draw(st.booleans()):
            out.append(CreateJob(now, _spec(job_id, draw(SCHEDULES), draw(st.booleans()), draw(BREAKERS))))
        elif kind == 0:  # bulk, with repeated ids and an occasional malformed spec
            specs: list[Any] = [_spec(draw(JOB_IDS), draw(SCHEDULES), False) for _ in range(draw(st.integers(1, 3)))]
            out.append(CreateJobs(now, specs + ([{"id": 7}] if draw(st.booleans()) else [])))
        elif kind == 1:
            out.append(ReplaceJob(now, _spec(job_id, draw(SCHEDULES), draw(st.booleans()), draw(BREAKERS)),
                                  draw(st.integers(0, 3))))
        elif kind == 2:
            out.append(DeleteJob(now, job_id, draw(st.integers(0, 2))))
        elif kind == 3:
            second = (now // 1000 + draw(st.integers(-2, 6))) * 1000
            out.append(AssignFires(now, [[draw(JOB_IDS), second, draw(NODES)] for _ in range(draw(st.integers(1, 4)))]))
        elif kind in (4, 5):
            second = (now // 1000 + draw(st.integers(-4, 4))) * 1000
            status = draw(st.sampled_from(["succeeded", "failed", "timed_out", "bogus"]))
            rows = [Outcome(f"{draw(JOB_IDS)}:{second}", draw(st.integers(1, 2)), status, 200, now, now + 3,
                            "", draw(st.integers(0, 5000))).to_list()]
            out.append(CompleteFires(now, draw(NODES), rows))
        elif kind == 6:
            second = (now // 1000 + draw(st.integers(-4, 4))) * 1000
            moves = [[f"{draw(JOB_IDS)}:{second}", draw(st.integers(1, 3)), draw(NODES)]]
            out.append(AssignFires(now, [], moves))
        elif kind == 7:
            out.append(TriggerJob(now, job_id))
        else:
            second = (now // 1000 + draw(st.integers(-4, 4))) * 1000
            letter = f"{job_id}:{second}"
            out.append(ReplayDeadLetter(now, letter) if draw(st.booleans()) else DropDeadLetter(now, letter))
    return out


@settings(max_examples=150, deadline=None)
@given(script=commands())
def test_same_commands_same_bytes(script: list[Command]) -> None:
    limits = StateLimits(history_per_job=3, recent_executions=5)
    first, second = StateMachine(limits), StateMachine(limits)
    results_first = [first.apply(decode(encode(c))) for c in script]
    results_second = [second.apply(decode(encode(c))) for c in script]
    assert results_first == results_second
    assert first.canonical_bytes() == second.canonical_bytes()
    _check_invariants(first)
    restored = pickle.loads(pickle.dumps(first))  # what pysyncobj's snapshot does
    assert restored.canonical_bytes() == first.canonical_bytes()


def _check_invariants(state: StateMachine) -> None:
    for job_id, job in state.jobs.items():
        in_slot = job_id in state.slots.slots.get((job["next_fire_ms"] or 0) // 1000, {})
        assert in_slot == (job["next_fire_ms"] is not None)
        assert not (job["spec"]["paused"] and job["next_fire_ms"] is not None)
        for scheduled_ms in job["active_fires"]:
            assert state.book.fires[f"{job_id}:{scheduled_ms}"]["job_id"] == job_id
    assert sum(len(j["active_fires"]) for j in state.jobs.values()) == len(state.book.fires)
    assert set(state.book.pending) == {f for f, fire in state.book.fires.items() if fire["node"] == ""}
    for fire in state.book.fires.values():
        assert fire["attempt"] > fire["attempt_base"] and fire["fire_id"] not in state.dead_letters
    assert len(state.slots) == sum(1 for j in state.jobs.values() if j["next_fire_ms"] is not None)
    assert state.slots.keys == sorted(state.slots.slots)
    for node_id, fire_ids in state.book.by_node.items():
        assert fire_ids and all(state.book.fires[f]["node"] == node_id for f in fire_ids)
