"""The state's bounds that an operator may configure, replicated through the log.

Limits shape what apply does (how much history a job keeps, when a fire is a
misfire, how many jobs fit in a second), so every node must apply the same
ones: a node that read them from its own config would create a job that
another refuses. The leader proposes its config's values (SetLimits) when
they differ from the state's; with configs that differ, the current leader's
win, as for the default quotas.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from schedb import history
from schedb.commands import SetLimits

if TYPE_CHECKING:
    from schedb.state import Result, State

# name -> (lowest, highest) accepted value
CONFIGURABLE: dict[str, tuple[int, int]] = {
    "history_per_job": (1, 10_000),
    "recent_executions": (1, 1_000_000),
    "misfire_grace_ms": (0, 86_400_000),
    "catch_up_window_ms": (0, 31 * 86_400_000),
    "idempotency_ttl_ms": (1_000, 31 * 86_400_000),
    "slot_jobs_max": (1, 10_000_000),
}


def current(state: State) -> dict[str, int]:
    return {name: getattr(state.limits, name) for name in CONFIGURABLE}


def set_limits(state: State, cmd: SetLimits) -> Result:
    if not isinstance(cmd.limits, dict) or set(cmd.limits) != set(CONFIGURABLE):
        return {"error": "invalid", "detail": f"limits must name exactly {', '.join(CONFIGURABLE)}"}
    for name, (low, high) in CONFIGURABLE.items():
        value = cmd.limits[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return {"error": "invalid", "detail": f"{name} must be an integer from {low} to {high}",
                    "errors": [{"field": name, "message": f"integer {low}..{high}"}]}
    old: Any = state.limits
    state.limits = replace(old, **{name: cmd.limits[name] for name in CONFIGURABLE})
    if state.limits.recent_executions != old.recent_executions:
        state.recent = deque(state.recent, maxlen=state.limits.recent_executions)
    if state.limits.history_per_job != old.history_per_job:
        for job_id in list(state.history):  # a job's ring keeps its newest records
            state.history[job_id] = deque(state.history[job_id], maxlen=state.limits.history_per_job)
        history.recount(state)  # a shorter ring dropped records behind the cluster-wide count
    return {"ok": True}
