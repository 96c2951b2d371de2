"""Service-registered jobs in the state machine."""

from __future__ import annotations

from typing import Any

from schedb.commands import RegisterJobs, ReplaceJob
from schedb.fsm.machine import StateMachine
from tests.unit.test_state import T0, at, cluster_state


def entry(name: str, schedule: str = "0 2 * * *", **extra: Any) -> dict[str, Any]:
    return {"name": name, "schedule": schedule, "callback_url": f"http://127.0.0.1:9999/{name}", **extra}


def register(state: StateMachine, *entries: dict[str, Any]) -> dict[str, Any]:
    result = state.apply(RegisterJobs(T0, "billing", list(entries)))
    assert result["ok"], result
    return result


def test_registered_jobs_start_disabled_and_keep_the_operators_choices() -> None:
    state = cluster_state()
    register(state, entry("nightly", description="invoices", parameters_schema={"type": "object"}))
    job = state.jobs["billing.nightly"]
    assert job["spec"]["paused"] is True and job["next_fire_ms"] is None
    assert job["registration"]["description"] == "invoices"
    enabled = {**job["spec"], "paused": False, "schedule": "0 3 * * *"}  # the operator enables and overrides
    assert state.apply(ReplaceJob(T0, enabled))["ok"]
    assert job["registration"]["schedule_override"] == "0 3 * * *"
    register(state, entry("nightly", "0 4 * * *", description="invoices v2"))  # the service re-registers
    job = state.jobs["billing.nightly"]
    assert job["spec"]["paused"] is False and job["spec"]["schedule"] == "0 3 * * *"
    assert job["registration"]["default_schedule"] == "0 4 * * *"
    assert job["registration"]["description"] == "invoices v2"
    reset = {**job["spec"], "schedule": "0 4 * * *"}  # back to the default: no override any more
    assert state.apply(ReplaceJob(T0, reset))["ok"] and job["registration"]["schedule_override"] is None


def test_a_job_no_longer_registered_is_orphaned_not_deleted() -> None:
    state = cluster_state()
    register(state, entry("a"), entry("b"))
    result = register(state, entry("a"))
    assert result["orphaned"] == ["billing.b"] and state.jobs["billing.b"]["registration"]["orphaned"] is True
    register(state, entry("a"), entry("b"))
    assert state.jobs["billing.b"]["registration"]["orphaned"] is False


def test_bad_registrations_change_nothing() -> None:
    state = cluster_state()
    before = state.canonical_bytes()
    for service, jobs in (("bad.name", [entry("a")]), ("billing", [entry("a", "not cron")]),
                          ("billing", [{**entry("a"), "extra": 1}]), ("billing", [entry("a", description=5)])):
        result = state.apply(RegisterJobs(T0, service, jobs))
        assert result["error"] == "invalid", result
    assert state.jobs == {} and before != state.canonical_bytes()  # only the rejection counter moved


def test_entries_need_distinct_valid_names_and_bounded_schemas() -> None:
    state = cluster_state()
    deep: Any = {}
    for _ in range(40):
        deep = {"a": deep}
    for jobs in ([{k: v for k, v in entry("a").items() if k != "name"}], [entry("a"), entry("a")],
                 [entry("a", parameters_schema=deep)], [{**entry("a"), "name": 5}]):
        assert state.apply(RegisterJobs(T0, "svc", jobs))["error"] == "invalid", jobs
    assert state.jobs == {}


def test_enabling_a_registered_job_catches_up_nothing() -> None:
    state = cluster_state()
    register(state, entry("hourly", "0 * * * *"))
    later = T0 + 3 * 86_400_000
    enabled = {**state.jobs["billing.hourly"]["spec"], "paused": False}
    assert at(state, ReplaceJob(later, enabled))["ok"]
    assert "billing.hourly" not in state.history and state.jobs["billing.hourly"]["next_fire_ms"] > later
