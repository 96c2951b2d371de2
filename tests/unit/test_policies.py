"""The executor's verdict on a due fire: misfire and concurrency policies."""

from __future__ import annotations

from typing import Any

from schedb.commands import AssignFires, CreateJob, DeleteJob
from schedb.fsm.machine import StateMachine
from schedb.policies import newer_fire_due, verdict
from tests.unit.test_state import T0, cluster_state, spec

GRACE_MS = 10_000


def two_fires(**job: Any) -> StateMachine:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(**job)))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    state.apply(AssignFires(T0, [["job", T0 + 2000, "node3"]]))
    return state


def fire(state: StateMachine, second: int) -> dict[str, Any]:
    return state.book.fires[f"job:{T0 + second * 1000}"]


def test_allow_fires_regardless_of_overlap() -> None:
    state = two_fires()
    assert verdict(state, fire(state, 2), T0 + 2000, GRACE_MS).fire


def test_forbid_skips_while_an_earlier_fire_runs_on_another_node() -> None:
    state = two_fires(concurrency="forbid")
    result = verdict(state, fire(state, 2), T0 + 2000, GRACE_MS)
    assert not result.fire and (result.status, result.reason) == ("skipped", "skipped_overlap")
    assert f"job:{T0 + 1000}" in result.detail


def test_replace_cancels_the_earlier_fire() -> None:
    state = two_fires(concurrency="replace")
    result = verdict(state, fire(state, 2), T0 + 2000, GRACE_MS)
    assert result.fire and result.replaces == (f"job:{T0 + 1000}",)
    assert newer_fire_due(state, fire(state, 1), T0 + 2000) == f"job:{T0 + 2000}"
    assert newer_fire_due(state, fire(state, 1), T0 + 1999) == ""


def test_a_fire_found_late_follows_the_misfire_policy() -> None:
    late = T0 + 2000 + GRACE_MS + 1
    # run_once: the job's next occurrence (still in its slot) is due too, so that one fires instead.
    for policy, oldest_fires, newest_fires in (("skip", False, False), ("run_once", False, False),
                                               ("run_all", True, True)):
        state = two_fires(misfire=policy)
        assert verdict(state, fire(state, 1), late, GRACE_MS).fire is oldest_fires, policy
        assert verdict(state, fire(state, 2), late, GRACE_MS).fire is newest_fires, policy
    state = two_fires(misfire="skip")
    assert verdict(state, fire(state, 1), T0 + 1000 + GRACE_MS, GRACE_MS).fire  # late, but within the grace
    state = cluster_state()
    state.apply(CreateJob(T0, spec(schedule="@every 1h")))
    state.apply(AssignFires(T0, [["job", T0 + 3_600_000, "node2"]]))
    hourly = state.book.fires[f"job:{T0 + 3_600_000}"]
    assert verdict(state, hourly, T0 + 3_660_000, GRACE_MS).fire  # run_once, nothing newer is due: it fires


def test_no_verdict_for_a_deleted_job() -> None:
    state = two_fires()
    gone = dict(fire(state, 1))
    state.apply(DeleteJob(T0, "job"))
    assert verdict(state, gone, T0 + 1000, GRACE_MS) is None
