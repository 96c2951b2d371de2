"""Apply depends on nothing of the host: time zones, bounds, and what happens when apply fails
(issue 16, defect 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import pytest

from schedb.applier import EXIT_APPLY_FAILED
from schedb.commands import CreateJob, SetLimits
from schedb.fsm import limits
from schedb.jobspec import InvalidJob, validate_job
from tests.unit.test_state import T0, at, cluster_state, spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("zone", ["posix/Europe/Berlin", "right/UTC", "posix/UTC", "right/Europe/Paris"])
def test_zones_of_the_hosts_database_are_refused(zone: str) -> None:
    """Accepted on a host whose /usr/share/zoneinfo has them, refused on one without: nodes'
    states differed. Only the pinned tzdata package is read now, on every host."""
    with pytest.raises(InvalidJob):
        validate_job({"id": "j", "schedule": "@daily", "timezone": zone, "webhook": {"url": "http://127.0.0.1/h"}})


def test_zones_of_tzdata_are_accepted() -> None:
    for zone in ("Europe/Berlin", "America/New_York", "UTC", "Factory"):
        assert validate_job({"id": "j", "schedule": "@daily", "timezone": zone,
                             "webhook": {"url": "http://127.0.0.1/h"}})["timezone"] == zone


def bounds(**changes: int) -> dict[str, int]:
    return {**limits.current(cluster_state().limits), **changes}


def test_bounds_come_through_the_log_so_every_node_applies_the_same() -> None:
    """slot_jobs_max came from each node's config: one node created a job another refused."""
    state = cluster_state()
    assert state.apply(SetLimits(T0, bounds(slot_jobs_max=1)))["ok"]
    assert at(state, CreateJob(T0, spec("a")))["ok"]
    assert at(state, CreateJob(T0, spec("b")))["error"] == "slot_full"


def test_a_smaller_history_bound_keeps_each_jobs_newest_records() -> None:
    state = cluster_state()
    state.history["job"] = deque([{"n": n} for n in range(100)], maxlen=100)
    assert state.apply(SetLimits(T0, bounds(history_per_job=10, recent_executions=5)))["ok"]
    assert [e["n"] for e in state.history["job"]] == list(range(90, 100)) and state.recent.maxlen == 5


@pytest.mark.parametrize("bad", [{}, {"slot_jobs_max": 5}, bounds(slot_jobs_max=0), bounds(history_per_job="9"),
                                 bounds(misfire_grace_ms=True), {**bounds(), "extra": 1}])
def test_bad_bounds_are_refused_and_change_nothing(bad: dict) -> None:
    state = cluster_state()
    assert state.apply(SetLimits(T0, bad))["error"] == "invalid"
    assert state.limits == cluster_state().limits


def test_an_exception_inside_apply_stops_the_node_loudly(tmp_path: Path) -> None:
    """pysyncobj applied a failing entry again on every tick, for ever, while the node said it
    was ready. The state here is made to fail (a fault injected into the state, not into the
    Raft adapter under test): the process exits at once with its own code and a critical log."""
    script = tmp_path / "apply_fails.py"
    script.write_text(textwrap.dedent("""
        from schedb.commands import CreateJob, encode
        from schedb.applier import StateHolder
        from schedb.fsm.machine import StateMachine

        class FailingState(StateMachine):
            def apply(self, command):
                raise RuntimeError("a bug in a handler")

        holder = StateHolder(FailingState(), lambda command: None)
        holder.apply_command(encode(CreateJob(1, {})), _doApply=True)  # as pysyncobj applies an entry
        print("still running")
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_APPLY_FAILED
    assert "apply_failed" in done.stdout + done.stderr and "still running" not in done.stdout
