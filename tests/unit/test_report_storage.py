"""Run reports in the state machine and the job statistics over them (issue 9)."""

from __future__ import annotations

from typing import Any

from schedb.api.stats import percentile, summarize
from schedb.api.views import execution_view
from schedb.commands import AssignFires, CompleteFires, CreateJob, Outcome, decode, encode, outcome_from_list
from schedb.fsm.machine import StateMachine
from tests.unit.test_state import T0, cluster_state, spec

FIRE = f"job:{T0 + 1000}"
REPORT = {"items_processed": 10, "items_succeeded": 8, "items_failed": 2, "message": "8 of 10 rows"}


def assigned() -> StateMachine:
    state = cluster_state()
    state.apply(CreateJob(T0, spec(retry={"max_attempts": 3, "backoff_s": 1, "backoff_max_s": 5})))
    state.apply(AssignFires(T0, [["job", T0 + 1000, "node2"]]))
    return state


def row(status: str = "succeeded", report: Any = None, attempt: int = 1) -> list[Any]:
    out = Outcome(FIRE, attempt, status, 200 if status == "succeeded" else 500, T0 + 1000, T0 + 1040).to_list()
    return out if report is None else [*out, report]


def test_a_report_travels_in_the_log_and_is_stored_with_the_execution() -> None:
    outcome = Outcome(FIRE, 1, "succeeded", 200, T0 + 1000, T0 + 1040, report=REPORT)
    assert outcome_from_list(outcome.to_list()) == outcome
    command = decode(encode(CompleteFires(T0 + 1100, "node2", [outcome.to_list()])))
    state = assigned()
    assert state.apply(command) == {"ok": True, "committed": 1}
    execution = state.history["job"][-1]
    assert execution["report"] == REPORT and state.recent[-1] is execution
    assert execution_view(execution)["report"] == REPORT


def test_no_report_keeps_the_record_as_before() -> None:
    state = assigned()
    state.apply(CompleteFires(T0 + 1100, "node2", [row()]))
    assert "report" not in state.history["job"][-1]
    assert execution_view(state.history["job"][-1])["report"] is None


def test_rows_of_earlier_versions_still_complete() -> None:
    nine = row()
    assert len(nine) == 9 and outcome_from_list(nine).report == {}
    eight = nine[:8]
    state = assigned()
    assert state.apply(CompleteFires(T0 + 1100, "node2", [eight]))["committed"] == 1
    assert state.history["job"][-1]["status"] == "succeeded"
    assert state.apply(CompleteFires(T0 + 1100, "node2", [[*row(attempt=2), {}, "eleventh"]]))["committed"] == 0


def test_a_bad_report_is_dropped_never_the_outcome() -> None:
    for bad in ({"items_processed": -1}, {"items_processed": 1, "secret": "x"}, {"message": "x" * 201},
                ["items_processed", 1], "report", 7, {"items_failed": True}):
        state = assigned()
        assert state.apply(CompleteFires(T0 + 1100, "node2", [row(report=bad)]))["committed"] == 1, bad
        execution = state.history["job"][-1]
        assert execution["status"] == "succeeded" and "report" not in execution, bad
        assert FIRE not in state.book.fires


def test_a_failed_attempt_keeps_its_report_and_is_retried() -> None:
    state = assigned()
    state.apply(CompleteFires(T0 + 1100, "node2", [row("failed", {"items_failed": 3, "message": "db down"})]))
    assert state.history["job"][-1]["report"] == {"items_failed": 3, "message": "db down"}
    assert state.book.fires[FIRE]["attempt"] == 2


def test_the_stored_report_does_not_depend_on_the_key_order_it_arrived_in() -> None:
    one, two = assigned(), assigned()
    one.apply(CompleteFires(T0 + 1100, "node2", [row(report=REPORT)]))
    two.apply(CompleteFires(T0 + 1100, "node2", [row(report=dict(reversed(REPORT.items())))]))
    assert one.canonical_bytes() == two.canonical_bytes()


# -- statistics --------------------------------------------------------------------------------


def execution(status: str, finished_ms: int, duration_ms: int = 10, report: dict[str, Any] | None = None,
              ) -> dict[str, Any]:
    out = {"status": status, "finished_ms": finished_ms, "duration_ms": duration_ms}
    return {**out, "report": report} if report else out


def test_percentiles_are_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert [percentile(ordered, p) for p in (50, 95, 99)] == [50, 95, 99]
    assert [percentile([7], p) for p in (50, 95, 99)] == [7, 7, 7]
    assert [percentile([1, 2], p) for p in (50, 95, 99)] == [1, 2, 2]


def test_stats_count_sum_and_rate_within_the_window() -> None:
    rows = [
        execution("succeeded", T0 - 10_000, 999, {"items_processed": 100, "message": "too old"}),  # outside
        execution("succeeded", T0, 10, {"items_processed": 5, "items_succeeded": 5, "message": "first"}),
        execution("failed", T0 + 1, 30, {"items_processed": 4, "items_failed": 4}),
        execution("timed_out", T0 + 2, 50),
        execution("skipped", T0 + 3, 0),
        execution("succeeded", T0 + 4, 20, {"items_processed": 1, "items_succeeded": 1, "message": "last"}),
        execution("succeeded", T0 + 5, 40, {"items_processed": 2}),
    ]
    stats = summarize(rows, T0)
    assert stats["executions"] == 6 and stats["attempts"] == 5
    assert stats["by_status"]["succeeded"] == 3 and stats["by_status"]["skipped"] == 1
    assert stats["by_status"]["missed"] == 0
    assert stats["success_rate"] == 3 / 5
    assert stats["duration_ms"] == {"p50": 30, "p95": 50, "p99": 50, "max": 50}
    assert stats["items"] == {"processed": 12, "succeeded": 6, "failed": 4} and stats["reports"] == 4
    assert (stats["last_message"], stats["last_message_at"]) == ("last", "2027-01-15T08:00:00.004Z")


def test_stats_of_nothing() -> None:
    stats = summarize([execution("skipped", T0)], T0)
    assert stats["executions"] == 1 and stats["attempts"] == 0 and stats["success_rate"] is None
    assert stats["duration_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert stats["items"] == {"processed": 0, "succeeded": 0, "failed": 0} and stats["last_message"] is None
