"""The records of schedb.fsm.model describe the dicts the state holds, key for key, and its
enums name the strings stored."""

from __future__ import annotations

from typing import Any

from schedb import jobspec
from schedb.fsm.machine import StateMachine
from schedb.fsm.model import (
    OUTCOME_STATUSES,
    USAGE_FIELDS,
    ApiKey,
    AuditRecord,
    DeadLetter,
    Execution,
    ExecutionStatus,
    Fire,
    Job,
    NodeRecord,
    Registration,
    Run,
    Secret,
    Step,
    StepStatus,
    TriggerRule,
    Usage,
)
from tests.unit import scenarios


def _fits(record_type: Any, records: list[dict[str, Any]]) -> None:
    required, optional = record_type.__required_keys__, record_type.__optional_keys__
    assert records, record_type.__name__
    for record in records:
        assert required <= set(record) <= required | optional, (record_type.__name__, sorted(record))


def _busy_state() -> StateMachine:
    state = StateMachine()
    for seed in range(40):  # until every kind of record exists
        scenarios.run(state, scenarios.RandomChooser(seed), 150, lambda *_: None)
        if state.runs and state.dead_letters and state.api_keys and state.secrets and \
                any("registration" in job for job in state.jobs.values()):
            return state
        state = StateMachine()
    raise AssertionError("no script made every kind of record")


def test_the_records_are_the_dicts_the_state_holds() -> None:
    state = _busy_state()
    _fits(Job, list(state.jobs.values()))
    _fits(Registration, [job["registration"] for job in state.jobs.values() if "registration" in job])
    _fits(Fire, list(state.book.fires.values()) + list(state.book.withdrawn.values()))
    _fits(Execution, [row for ring in state.history.values() for row in ring] + list(state.recent))
    _fits(DeadLetter, list(state.dead_letters.values()))
    _fits(Run, list(state.runs.values()))
    _fits(Step, [step for run in state.runs.values() for step in run["steps"].values()])
    _fits(NodeRecord, list(state.nodes.values()))
    _fits(ApiKey, list(state.api_keys.values()))
    _fits(Secret, [secret for team in state.secrets.values() for secret in team.values()])
    _fits(Usage, list(state.usage.values()))
    _fits(AuditRecord, list(state.audit))
    assert set(USAGE_FIELDS) == Usage.__required_keys__


def test_the_enums_are_the_strings_stored_and_validated() -> None:
    assert tuple(TriggerRule) == jobspec.TRIGGER_RULES
    assert StepStatus.SUCCEEDED == "succeeded" and {"succeeded": 1}[StepStatus.SUCCEEDED] == 1
    assert f"{ExecutionStatus.MISSED}" == "missed" and type(str(ExecutionStatus.MISSED)) is str
    assert [str(s) for s in OUTCOME_STATUSES] == ["succeeded", "failed", "timed_out", "skipped", "missed"]
