"""The executor's table of local fires (one phase per attempt, transitions checked) and
the pure reconcile that makes it follow the state's changes to this node's fires."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from schedb.commands import Outcome
from schedb.local_fires import LocalFire, LocalFires, Phase, PhaseError, Plan, reconcile
from schedb.timers import FireKey

WAIT, HELD, ORPH, RUN, REP = Phase.WAITING, Phase.HELD, Phase.ORPHANED, Phase.RUNNING, Phase.REPORTED


class FakeTimers:
    """DueTimers without a loop: a test makes an instant come with `fire`."""

    def __init__(self, on_due: Callable[[FireKey, dict[str, Any]], None]) -> None:
        self.on_due = on_due
        self.waiting: dict[FireKey, dict[str, Any]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.waiting

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, key: FireKey, fire: dict[str, Any]) -> None:
        self.waiting[key] = fire

    def cancel(self, key: FireKey) -> None:
        self.waiting.pop(key, None)

    def cancel_all(self) -> None:
        self.waiting.clear()

    def fire(self, key: FireKey) -> None:
        self.on_due(key, self.waiting.pop(key))


class Table:
    """A LocalFires whose due attempts go where `then` says (hold, orphan or start)."""

    def __init__(self) -> None:
        self.then = "hold"
        self.fires = LocalFires(self._due, self._timers)

    def _timers(self, on_due: Callable[[FireKey, dict[str, Any]], None]) -> FakeTimers:
        self.timers = FakeTimers(on_due)
        return self.timers

    def _due(self, local: LocalFire) -> None:
        if self.then == "hold":
            self.fires.hold(local.key)
        elif self.then == "orphan":
            self.fires.orphan(local.key)
        elif self.then == "start":
            self.fires.start(local.key, task())

    def due(self, key: FireKey, then: str) -> None:
        self.then = then
        self.timers.fire(key)
        self.fires.check()


class _Task:
    """Stands for the asyncio task of a running attempt (the table only keeps it)."""

    def done(self) -> bool:
        return False


def task() -> asyncio.Task[None]:
    return _Task()  # type: ignore[return-value]


def fire(fire_id: str, attempt: int = 1) -> dict[str, Any]:
    return {"fire_id": fire_id, "attempt": attempt, "due_ms": 1_000}


def outcome(key: FireKey, status: str = "succeeded") -> Outcome:
    return Outcome(key[0], key[1], status, 200, 1_000, 1_010, "")


def table_in(phases: dict[FireKey, Phase]) -> Table:
    """A table with these attempts in these phases, each reached by its transitions."""
    table = Table()
    for key, phase in phases.items():
        table.fires.arm(key, fire(*key))
        if phase is not WAIT:
            table.due(key, {HELD: "hold", ORPH: "orphan"}.get(phase, "start"))
        if phase is REP:
            table.fires.report(key, outcome(key))
    table.fires.check()
    assert table.fires.phases() == phases
    return table


# -- the table ---------------------------------------------------------------------------


def test_an_attempt_goes_from_waiting_to_committed_one_phase_at_a_time() -> None:
    table = Table()
    key = ("f", 1)
    table.fires.arm(key, fire("f"))
    table.fires.check()
    assert table.fires.phase_of(key) is WAIT and key in table.timers and table.fires.count(WAIT) == 1
    table.due(key, "hold")
    assert table.fires.phase_of(key) is HELD and key not in table.timers
    table.fires.start(key, task())
    table.fires.check()
    assert table.fires.phase_of(key) is RUN and table.fires.running_of("f") == [key]
    table.fires.report(key, outcome(key))
    table.fires.finish(key)  # the task ends after its report: the outcome stays until it commits
    table.fires.check()
    assert table.fires.phase_of(key) is REP and table.fires.outcomes(10) == [(key, outcome(key))]
    table.fires.committed([key])
    table.fires.check()
    assert len(table.fires) == 0 and key not in table.fires


def test_a_run_with_nothing_to_report_leaves_the_table() -> None:
    table = table_in({("f", 1): RUN})
    table.fires.finish(("f", 1))  # not ours any more, or the job was deleted
    table.fires.check()
    assert len(table.fires) == 0


@pytest.mark.parametrize(("phase", "transition"), [
    (WAIT, "report"), (WAIT, "finish"), (WAIT, "committed"), (HELD, "hold"), (HELD, "orphan"), (ORPH, "start"),
    (RUN, "start"), (RUN, "drop"), (RUN, "hold"), (REP, "report"), (REP, "drop"), (REP, "start"),
    (WAIT, "wait_again"), (ORPH, "wait_again"), (RUN, "wait_again"),
])
def test_a_transition_from_a_phase_that_does_not_allow_it_is_refused(phase: Phase, transition: str) -> None:
    key = ("f", 1)
    table = table_in({key: phase})
    calls: dict[str, Callable[[], None]] = {
        "hold": lambda: table.fires.hold(key), "orphan": lambda: table.fires.orphan(key),
        "start": lambda: table.fires.start(key, task()), "report": lambda: table.fires.report(key, outcome(key)),
        "finish": lambda: table.fires.finish(key), "drop": lambda: table.fires.drop(key),
        "committed": lambda: table.fires.committed([key]), "wait_again": lambda: table.fires.wait_again(key),
    }
    with pytest.raises(PhaseError):
        calls[transition]()
    table.fires.check()
    assert table.fires.phase_of(key) is phase  # unchanged


def test_an_attempt_not_in_the_table_has_no_transition_but_arm() -> None:
    table = Table()
    for call in (lambda: table.fires.hold(("f", 1)), lambda: table.fires.start(("f", 1), task()),
                 lambda: table.fires.drop(("f", 1)), lambda: table.fires.finish(("f", 1))):
        with pytest.raises(PhaseError):
            call()
    table.fires.committed([("f", 1)])  # an outcome committed twice: nothing left to forget
    assert len(table.fires) == 0


def test_a_fire_has_at_most_one_pending_attempt_and_each_key_one_record() -> None:
    table = table_in({("f", 1): HELD})
    with pytest.raises(PhaseError):
        table.fires.arm(("f", 2), fire("f", 2))  # the held attempt must be dropped first
    table.fires.drop(("f", 1))
    table.fires.arm(("f", 2), fire("f", 2))
    table.due(("f", 2), "start")
    with pytest.raises(PhaseError):
        table.fires.arm(("f", 2), fire("f", 2))
    table.fires.arm(("f", 3), fire("f", 3))  # a new attempt may wait while an older one runs
    table.fires.check()
    assert table.fires.phases(["f"]) == {("f", 2): RUN, ("f", 3): WAIT}


def test_a_due_attempt_must_be_held_orphaned_or_started() -> None:
    table = table_in({("f", 1): WAIT})
    with pytest.raises(PhaseError):
        table.due(("f", 1), "nothing")


def test_dropping_a_waiting_attempt_cancels_its_timer_and_draining_drops_all_waiting() -> None:
    table = table_in({("a", 1): WAIT, ("b", 1): WAIT, ("c", 1): HELD, ("d", 1): ORPH, ("e", 1): RUN})
    table.fires.drop(("a", 1))
    table.fires.drop(("d", 1))  # an orphan forgotten: its fire moved or ended
    table.fires.check()
    assert ("a", 1) not in table.timers and table.fires.count(WAIT, HELD) == 2
    table.fires.drop_waiting()
    table.fires.check()
    assert table.fires.phases() == {("c", 1): HELD, ("e", 1): RUN} and len(table.timers) == 0


def test_outcomes_leave_in_the_order_they_were_reported_within_the_batch_bound() -> None:
    table = table_in({("a", 1): RUN, ("b", 1): RUN, ("c", 1): RUN})
    for key in (("c", 1), ("a", 1), ("b", 1)):
        table.fires.report(key, outcome(key))
    assert [key for key, _ in table.fires.outcomes(2)] == [("c", 1), ("a", 1)]
    table.fires.committed([("c", 1), ("a", 1)])
    assert [key for key, _ in table.fires.outcomes(2)] == [("b", 1)]


def test_a_handed_back_attempt_is_offered_once_even_after_it_is_held() -> None:
    table = table_in({("a", 1): WAIT, ("b", 1): HELD, ("c", 1): RUN})
    assert table.fires.to_offer(lambda fire: False) == [("a", 1), ("b", 1)]
    table.fires.offer([("a", 1), ("b", 1), ("gone", 1)])
    table.fires.arm(("d", 1), fire("d"))  # assigned while the hand-back committed
    table.due(("a", 1), "hold")
    assert table.fires.to_offer(lambda fire: False) == [("d", 1)]


def test_an_attempt_a_previous_run_may_have_started_is_not_handed_back() -> None:
    """Review: an at-most-once fire due before a restart, still waiting for its timer, would go
    back as "never started" and run elsewhere as the same attempt."""
    table = table_in({("a", 1): WAIT, ("b", 1): HELD})
    assert table.fires.to_offer(lambda f: f["fire_id"] == "a") == [("b", 1)]


def test_check_finds_a_record_changed_behind_the_tables_back() -> None:
    table = table_in({("f", 1): RUN})
    local = table.fires.get(("f", 1))
    assert local is not None
    local.task = None
    with pytest.raises(PhaseError):
        table.fires.check()


# -- reconcile: pure -----------------------------------------------------------------------


def test_a_new_fire_is_armed() -> None:
    assert reconcile({}, False, {"f": fire("f")}) == Plan(arm=((("f", 1), fire("f")),))


def test_a_fire_unchanged_in_any_phase_needs_nothing() -> None:
    for phase in Phase:
        assert reconcile({("f", 1): phase}, False, {"f": fire("f")}) == Plan(), phase


@pytest.mark.parametrize("phase", [WAIT, HELD, ORPH])
def test_a_new_attempt_replaces_a_pending_one(phase: Phase) -> None:
    assert reconcile({("f", 1): phase}, False, {"f": fire("f", 2)}) == Plan(
        drop=(("f", 1),), arm=((("f", 2), fire("f", 2)),))


@pytest.mark.parametrize("phase", [RUN, REP])
def test_a_new_attempt_is_armed_beside_a_started_one(phase: Phase) -> None:
    """A retry of a fire whose previous attempt still runs or waits to commit its outcome."""
    assert reconcile({("f", 1): phase}, False, {"f": fire("f", 2)}) == Plan(arm=((("f", 2), fire("f", 2)),))


@pytest.mark.parametrize(("phase", "plan"), [
    (WAIT, Plan(drop=(("f", 1),))), (HELD, Plan(drop=(("f", 1),))), (ORPH, Plan(drop=(("f", 1),))),
    (RUN, Plan()), (REP, Plan()),  # started: the last-moment checks and the state's at-most-one outcome decide
])
def test_a_fire_moved_away_or_ended(phase: Phase, plan: Plan) -> None:
    assert reconcile({("f", 1): phase}, False, {"f": None}) == plan


def test_an_attempt_started_here_is_never_armed_again() -> None:
    local = {("f", 1): REP, ("f", 2): RUN}
    assert reconcile(local, False, {"f": fire("f", 2)}) == Plan()
    assert reconcile(local, True, {"f": fire("f", 2)}) == Plan()


def test_a_full_change_takes_away_the_pending_attempts_it_omits() -> None:
    local = {("w", 1): WAIT, ("h", 1): HELD, ("o", 1): ORPH, ("r", 1): RUN, ("d", 1): REP, ("kept", 1): WAIT}
    changed = {"kept": fire("kept"), "new": fire("new")}
    assert reconcile(local, True, changed) == Plan(drop=(("w", 1), ("h", 1), ("o", 1)),
                                                   arm=((("new", 1), fire("new")),))
    assert reconcile(local, False, changed) == Plan(arm=((("new", 1), fire("new")),))  # a delta omits nothing


def test_an_orphaned_at_most_once_fire_stays_left_alone_until_the_state_moves_it() -> None:
    local = {("amo", 1): ORPH}
    assert reconcile(local, True, {"amo": fire("amo")}) == Plan()  # a snapshot lists it again: not re-armed
    assert reconcile(local, False, {"amo": None}) == Plan(drop=(("amo", 1),))  # recorded unknown at its lease
    assert reconcile(local, True, {}) == Plan(drop=(("amo", 1),))


def test_reconcile_changes_none_of_its_inputs() -> None:
    local = {("a", 1): WAIT, ("b", 1): RUN}
    changed: dict[str, dict[str, Any] | None] = {"a": None, "c": fire("c")}
    before = (dict(local), {k: (dict(v) if v else v) for k, v in changed.items()})
    reconcile(local, True, changed)
    assert (local, changed) == before


def test_a_plan_applied_to_the_table_keeps_its_invariants() -> None:
    table = table_in({("w", 1): WAIT, ("h", 1): HELD, ("o", 1): ORPH, ("r", 1): RUN, ("d", 1): REP})
    changed: dict[str, dict[str, Any] | None] = {"w": fire("w", 2), "h": None, "r": fire("r", 2), "n": fire("n")}
    plan = reconcile(table.fires.phases(), True, changed)
    for key in plan.drop:
        table.fires.drop(key)
    for key, new in plan.arm:
        table.fires.arm(key, new)
    table.fires.check()
    assert table.fires.phases() == {("w", 2): WAIT, ("r", 1): RUN, ("r", 2): WAIT, ("d", 1): REP, ("n", 1): WAIT}


def test_a_held_attempt_waits_again_with_a_timer() -> None:
    key = ("f", 1)
    table = table_in({key: HELD})
    table.fires.wait_again(key)
    table.fires.check()  # a timer iff waiting
    assert table.fires.phase_of(key) is WAIT and key in table.timers
