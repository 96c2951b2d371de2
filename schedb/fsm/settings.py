"""SetLimits inside the replicated state: the operator's bounds (schedb.fsm.limits) change.

The leader proposes its config's [scheduler] bounds when they differ from the state's; every
node applies them at the same point of the log. A shorter ring or list keeps its newest records.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from schedb.commands import SetLimits
from schedb.fsm import history
from schedb.fsm.core import State
from schedb.fsm.limits import CONFIGURABLE
from schedb.fsm.model import Result


def set_limits(state: State, cmd: SetLimits) -> Result:
    if not isinstance(cmd.limits, dict) or set(cmd.limits) != set(CONFIGURABLE):
        return {"error": "invalid", "detail": f"limits must name exactly {', '.join(CONFIGURABLE)}"}
    for name, (low, high) in CONFIGURABLE.items():
        value = cmd.limits[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return {"error": "invalid", "detail": f"{name} must be an integer from {low} to {high}",
                    "errors": [{"field": name, "message": f"integer {low}..{high}"}]}
    old = state.limits
    state.limits = replace(old, **{name: cmd.limits[name] for name in CONFIGURABLE})
    if state.limits.recent_executions != old.recent_executions:
        state.recent = deque(state.recent, maxlen=state.limits.recent_executions)
    if state.limits.history_per_job != old.history_per_job:
        for job_id in list(state.history):  # a job's ring keeps its newest records
            state.history[job_id] = deque(state.history[job_id], maxlen=state.limits.history_per_job)
        history.recount(state)  # a shorter ring dropped records behind the cluster-wide count
    return {"ok": True}
