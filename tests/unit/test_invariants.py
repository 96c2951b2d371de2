"""The state's invariants (schedb.fsm.invariants) hold after every command: of every scenario
of the state machine's unit tests, and of random command scripts of every kind."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedb.commands import Command
from schedb.fsm.invariants import InvariantViolation, check, violations
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import Result, StepStatus
from tests.unit import (
    scenarios,
    test_catchup,
    test_determinism,
    test_fire_identity,
    test_history,
    test_lifecycle,
    test_policies,
    test_pruning,
    test_registry,
    test_report_storage,
    test_snapshot_compat,
    test_state,
    test_tenancy,
    test_workflow,
)

MODULES: tuple[ModuleType, ...] = (
    test_state, test_lifecycle, test_workflow, test_tenancy, test_registry, test_history, test_fire_identity,
    test_catchup, test_pruning, test_report_storage, test_policies, test_determinism, test_snapshot_compat)


def _scenarios() -> list[Any]:
    out = []
    for module in MODULES:
        for name, test in inspect.getmembers(module, inspect.isfunction):
            takes_args = inspect.signature(test).parameters and not hasattr(test, "hypothesis")
            if name.startswith("test_") and test.__module__ == module.__name__ and not takes_args:
                out.append(pytest.param(test, id=f"{module.__name__.rsplit('.', 1)[1]}.py::{name}"))
    return out


def _checked(apply: Callable[[StateMachine, Command], Result]) -> Callable[[StateMachine, Command], Result]:
    def checked_apply(state: StateMachine, command: Command) -> Result:
        now_before = state.now_ms
        result = apply(state, command)
        problems = violations(state)
        if state.now_ms < now_before:
            problems.append(f"replicated time went back from {now_before} to {state.now_ms}")
        if problems:
            raise InvariantViolation([f"after {type(command).__name__} ({result.get('error', 'ok')}): {p}"
                                      for p in problems])
        return result
    return checked_apply


@pytest.mark.parametrize("scenario", _scenarios())
def test_invariants_hold_after_every_command_of_the_unit_scenarios(scenario: Callable[[], None],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StateMachine, "apply", _checked(StateMachine.apply))
    scenario()


def test_the_scenarios_are_found() -> None:
    assert len(_scenarios()) > 100


def _run_checked(chooser: scenarios.Chooser, steps: int) -> tuple[StateMachine, list[Command]]:
    state, script = StateMachine(), []

    def after(state: StateMachine, command: Command, result: Result) -> None:
        script.append(command)
        try:
            check(state)
        except InvariantViolation as exc:
            raise AssertionError(f"after {command!r} -> {result!r}: {exc}") from None

    scenarios.run(state, chooser, steps, after)
    return state, script


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_invariants_hold_after_any_commands_and_the_state_replays_byte_identical(data: st.DataObject) -> None:
    state, script = _run_checked(scenarios.HypothesisChooser(data), 60)
    replayed = StateMachine()
    scenarios.start(replayed)
    for command in script:
        replayed.apply(command)
    restored = pickle.loads(pickle.dumps(state))
    assert replayed.canonical_bytes() == state.canonical_bytes() == restored.canonical_bytes()
    assert violations(restored) == []


@pytest.mark.parametrize("seed", range(8))
def test_invariants_hold_through_long_random_scripts(seed: int) -> None:
    _run_checked(scenarios.RandomChooser(seed), 400)


def test_the_checks_see_a_broken_state() -> None:
    state = StateMachine()
    scenarios.run(state, scenarios.RandomChooser(3), 150, lambda *_: None)
    assert violations(state) == [] and state.book.fires and state.slots.keys
    fire_id = next(iter(state.book.fires))
    breakages: dict[str, Callable[[StateMachine], None]] = {
        "both active and withdrawn": lambda s: s.book.withdrawn.update({fire_id: s.book.fires[fire_id]}),
        "slot index says": lambda s: s.slots.remove(s.slots.slots[s.slots.keys[0]].copy().popitem()[0],
                                                    s.slots.keys[0] * 1000),
        "in its job's active fires 0x": lambda s: s.jobs[s.book.fires[fire_id]["job_id"]]["active_fires"].clear(),
        "held by unregistered node": lambda s: s.nodes.clear(),
        "holds a StepStatus": lambda s: s.counters.update(x=StepStatus.RUNNING),  # type: ignore[arg-type]
        "not declared": lambda s: setattr(s, "runs_by_job", {}),
    }
    for expected, breakage in breakages.items():
        broken = pickle.loads(pickle.dumps(state))
        breakage(broken)
        assert any(expected in problem for problem in violations(broken)), expected
