"""The referee's doubled_delivery rule: which double deliveries are at-least-once redelivery
(the first caller was as good as dead to the cluster) and which are bugs it must report."""

from __future__ import annotations

import types

import pytest

from devkit.sim.checks import Referee, Violation
from devkit.sim.receiver import Call

NODES = ("node1", "node2", "node3")
LINKS = [(a, b) for a in NODES for b in NODES if a != b]
ISOLATE_NODE3 = {("node3", "node1"), ("node3", "node2"), ("node1", "node3"), ("node2", "node3")}


def doubled(cut: set[tuple[str, str]], attempt: int, moved_at: float | None, paused: bool = False,
            committed_at: float = 16.3) -> bool:
    """node3 calls fire X (attempt 1) at 10.0 s, is cut (or paused) from 10.1 s to 16.1 s, and
    its outcome commits at committed_at (16.3 s); node2 calls X as `attempt` at 15.2 s, the leader node1 having
    made that attempt at moved_at, after X's lease ended (None: no such reassignment, e.g. one
    before the lease ended, which the referee does not note). Does the referee report it?"""
    world = types.SimpleNamespace(now=10.1)
    referee = Referee(world, 500, lambda: [])  # type: ignore[arg-type]
    referee.cut_offs.links(cut, LINKS)
    referee.cut_offs.pause("node3", paused)
    world.now = 16.1
    referee.cut_offs.links(set(), LINKS)
    referee.cut_offs.pause("node3", False)
    if moved_at is not None:
        referee.reassigned_at[("X", attempt, 0)] = (moved_at, "node1")
    referee.committed_at[("X", 1, 0)] = committed_at
    calls = [Call("node3", 1, "X", 1, "job", at=10.0, status="succeeded"),
             Call("node2", 1, "X", attempt, "job", at=15.2, status="succeeded")]
    try:
        referee._check_doubled(calls)
    except Violation:
        return True
    return False


@pytest.mark.parametrize(("cut", "paused"), [(ISOLATE_NODE3, False), ({("node3", "node1")}, False),
                                              ({("node1", "node3")}, False), (set(), True)])
def test_a_caller_cut_off_from_the_leader_when_its_fire_moved_excuses_the_second_delivery(
        cut: set[tuple[str, str]], paused: bool) -> None:
    assert not doubled(cut, attempt=2, moved_at=15.1, paused=paused)


def test_doubles_that_no_cut_off_excuses_are_reported() -> None:
    assert doubled(set(), attempt=2, moved_at=15.1)  # nothing kept node3 from reporting
    assert doubled(ISOLATE_NODE3, attempt=1, moved_at=None)  # the same attempt given to another: a bug
    assert doubled(ISOLATE_NODE3, attempt=2, moved_at=None)  # a new attempt no reassignment made
    assert doubled(ISOLATE_NODE3, attempt=2, moved_at=20.2, committed_at=20.3)  # 4 s in touch to report first
    assert doubled({("node3", "node2")}, attempt=2, moved_at=15.1)  # node3 could still reach the leader


def test_a_caller_back_in_touch_too_late_to_report_before_the_move_is_excused() -> None:
    """Simulator seed 60324: cut off for 10.6 s, back 0.6 s before its lease ended; the outcome's
    next retry came 0.1 s after the move. Back in touch within REPORT_WINDOW_S: still excused."""
    assert not doubled(ISOLATE_NODE3, attempt=2, moved_at=16.7, committed_at=16.8)
