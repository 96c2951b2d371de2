"""Workflows inside the replicated state: job dependencies (a DAG) and their runs.

A job may declare `depends_on` (upstream job ids of its team) and a
`trigger_rule`. A fire of a job that others depend on starts a run (its run id
is that fire's id); the run holds a step for that root and every job
downstream of it. When a step's fire ends, each dependent whose upstreams in
the run have settled either fires (a pending fire with trigger
`dependency:<run id>`, carrying the run id) or is marked `upstream_failed`,
which settles it for its own dependents in turn. Upstreams outside the run
(not downstream of its root) are not waited for.

Every fire is created and ended through `new_fire` and `end_fire` here, so the
runs hear of it (the State's primitives below do the book-keeping). Like the
other handlers: functions of the state, deterministic (every set is walked in
sorted order), no clock but `state.now_ms`, bounded (runs_max).
"""

from __future__ import annotations

from typing import Any

import msgpack

from schedb.fsm import history, tenancy
from schedb.fsm.core import State
from schedb.fsm.fires import PENDING, fire_id_of
from schedb.fsm.model import (
    SETTLED,
    ExecutionStatus,
    Fire,
    Reason,
    Result,
    Run,
    Step,
    StepStatus,
    Trigger,
    TriggerRule,
)
from schedb.jobspec import BODY_DEPTH_MAX, json_depth

RUN_STEPS_MAX = 1_000
PARAMS_BYTES_MAX = 4_096


# -- the graph -------------------------------------------------------------------


def dependency_error(state: State, spec: dict[str, Any], team: str) -> Result | None:
    """Upstreams must be jobs of the same team, and the job must not end up upstream of itself."""
    job_id = spec["id"]
    for upstream in spec["depends_on"]:
        other = state.jobs.get(upstream)
        if other is None or other["team"] != team:
            return tenancy.invalid("depends_on", f"job {upstream!r} does not exist")
    cycle = _path(state, spec["depends_on"], job_id)
    if cycle is not None:
        names = " → ".join([job_id, *cycle])
        return tenancy.invalid("depends_on", f"a dependency cycle: {names}")
    return None


def _path(state: State, starts: list[str], target: str) -> list[str] | None:
    """A chain of depends_on edges from one of starts to target (it then depends on itself)."""
    seen: set[str] = set()
    stack = [(start, [start]) for start in reversed(sorted(starts))]
    while stack:
        job_id, path = stack.pop()
        if job_id == target:
            return path
        if job_id in seen or job_id not in state.jobs:
            continue
        seen.add(job_id)
        for upstream in reversed(sorted(state.jobs[job_id]["spec"]["depends_on"])):
            stack.append((upstream, [*path, upstream]))
    return None


def link(state: State, job_id: str, old_upstreams: list[str], new_upstreams: list[str]) -> None:
    for upstream in sorted(set(old_upstreams) - set(new_upstreams)):  # sorted: the same order on every node
        rest = [d for d in state.dependents.get(upstream, []) if d != job_id]
        if rest:
            state.dependents[upstream] = rest
        else:
            state.dependents.pop(upstream, None)
    for upstream in sorted(set(new_upstreams) - set(old_upstreams)):
        state.dependents[upstream] = sorted({*state.dependents.get(upstream, []), job_id})


def deletion_error(state: State, job_id: str, force: Any) -> Result | None:
    dependents = state.dependents.get(job_id, [])
    if dependents and force is not True:
        return {"error": "conflict", "detail": f"jobs {', '.join(dependents)} depend on {job_id!r}; delete them "
                f"first, or delete with force (they then lose this dependency)"}
    stranded = [d for d in dependents if state.jobs[d]["spec"]["depends_on"] == [job_id]
                and state.jobs[d]["spec"]["schedule"] is None]
    if stranded:
        return {"error": "conflict", "detail": f"jobs {', '.join(stranded)} would have neither a schedule nor an "
                "upstream left; give them a schedule or delete them first"}
    return None


def unlink_deleted(state: State, job_id: str) -> list[str]:
    """A forced delete: the dependents no longer depend on the job (a new version of each);
    returns them."""
    dependents = state.dependents.pop(job_id, [])
    for dependent in dependents:
        job = state.jobs[dependent]
        job["spec"] = {**job["spec"], "depends_on": [u for u in job["spec"]["depends_on"] if u != job_id]}
        job["version"] += 1
        job["updated_ms"] = state.now_ms
    link(state, job_id, state.jobs[job_id]["spec"]["depends_on"], [])
    return dependents


# -- fires and runs ----------------------------------------------------------------


def new_fire(state: State, job_id: str, scheduled_ms: int, node: str, *, trigger: str, attempt: int = 1,
             correlation_id: Any = "", run_id: str = "", params: dict[str, Any] | None = None) -> Fire:
    """Every new fire: State.add_fire, then its run starts (a fire of a job others depend on,
    outside a run, starts one)."""
    fire = state.add_fire(job_id, scheduled_ms, node, trigger=trigger, attempt=attempt,
                          correlation_id=correlation_id, run_id=run_id, params=params)
    _fire_created(state, fire)
    return fire


def end_fire(state: State, fire_id: str, result: StepStatus) -> Fire:
    """Every fire that ends: State.remove_fire, then its run settles what now can be. result:
    succeeded, failed, skipped or deleted (what a workflow step makes of it)."""
    fire = state.remove_fire(fire_id)
    if fire["trigger"] == Trigger.SCHEDULE and fire["job_id"] in state.jobs:
        state.occurrence_ran(fire["job_id"], fire["scheduled_ms"])
    if result in (StepStatus.FAILED, StepStatus.SKIPPED) and fire["job_id"] in state.jobs:
        state.book.keep_ended(fire, state.limits.ended_max)  # an earlier attempt may still report
    _fire_ended(state, fire, result)
    return fire


def _fire_created(state: State, fire: Fire) -> None:
    job_id = fire["job_id"]
    if fire["run_id"] or not state.dependents.get(job_id):
        return
    steps = {job: _step(StepStatus.WAITING, None) for job in _downstream(state, job_id)}
    steps[job_id] = _step(StepStatus.RUNNING, fire["fire_id"])
    run_id = fire["fire_id"]
    if run_id in state.runs:  # a replay or backfill of the same instant: a run of its own
        run_id = f"{run_id}~{state.applied}"
    fire["run_id"] = run_id
    state.runs[run_id] = {"run_id": run_id, "root": job_id, "team": state.jobs[job_id]["team"],
                          "started_ms": state.now_ms, "finished_ms": None, "steps": steps}
    _bound_runs(state)


def _step(status: StepStatus, fire_id: str | None) -> Step:
    return {"status": str(status), "fire_id": fire_id}


def _downstream(state: State, root: str) -> list[str]:
    found: set[str] = set()
    stack = [root]
    while stack and len(found) < RUN_STEPS_MAX:
        for dependent in state.dependents.get(stack.pop(), []):
            if dependent not in found:
                found.add(dependent)
                stack.append(dependent)
    return sorted(found)


def _bound_runs(state: State) -> None:
    """The oldest finished run goes first; the oldest run still going only when none has finished
    (its remaining steps then never fire: runs_max is far above what a cluster keeps going)."""
    while len(state.runs) > state.limits.runs_max:
        oldest = next(iter(state.finished_runs), None) or next(iter(state.runs))
        state.finished_runs.pop(oldest, None)
        del state.runs[oldest]


def _finish(state: State, run: Run) -> None:
    if run["finished_ms"] is None and all(step["status"] in SETTLED for step in run["steps"].values()):
        run["finished_ms"] = state.now_ms
        state.finished_runs[run["run_id"]] = None


def _fire_ended(state: State, fire: Fire, result: StepStatus) -> None:
    run = state.runs.get(fire.get("run_id") or "")
    step = run["steps"].get(fire["job_id"]) if run is not None else None
    if run is None or step is None or step["status"] != StepStatus.RUNNING or step["fire_id"] != fire["fire_id"]:
        return  # not (or no longer) this run's step
    step["status"] = str(result)
    _settle_from(state, run, [fire["job_id"]])


def step_withdrawn(state: State, fire: Fire) -> None:
    """A fire taken back before it was due (paused, rescheduled). The root of a run: the run
    never happened, so it goes without deciding anything. Another step: it counts as skipped,
    and its run goes on."""
    run = state.runs.get(fire.get("run_id") or "")
    if run is not None and run["steps"][run["root"]]["fire_id"] == fire["fire_id"]:
        del state.runs[run["run_id"]]
        return
    _fire_ended(state, fire, StepStatus.SKIPPED)


def _settle_from(state: State, run: Run, settled: list[str]) -> None:
    """Decide the waiting dependents of the settled steps, and theirs in turn."""
    while settled:
        upstream = settled.pop()
        for dependent in state.dependents.get(upstream, []):
            step = run["steps"].get(dependent)
            decided = step is not None and step["status"] == StepStatus.WAITING and _decide(state, run, dependent)
            if decided and run["steps"][dependent]["status"] in SETTLED:  # upstream_failed, skipped, deleted
                settled.append(dependent)
    _finish(state, run)


def graph_changed(state: State, job_id: str) -> None:
    """A job was deleted, or its depends_on changed: its waiting steps in open runs are decided
    again (a deleted one becomes `deleted`), or those runs would never finish."""
    for run in list(state.runs.values()):
        step = run["steps"].get(job_id)
        if run["finished_ms"] is None and step is not None and step["status"] == StepStatus.WAITING \
                and _decide(state, run, job_id) and run["steps"][job_id]["status"] in SETTLED:
            _settle_from(state, run, [job_id])
        _finish(state, run)


def _decide(state: State, run: Run, job_id: str) -> bool:
    """Fire the dependent, or mark it upstream_failed, if its upstreams allow; True if decided."""
    job = state.jobs.get(job_id)
    if job is None:
        run["steps"][job_id]["status"] = str(StepStatus.DELETED)
        return True
    ups = [run["steps"][u]["status"] for u in job["spec"]["depends_on"] if u in run["steps"]]
    done = all(s in SETTLED for s in ups)
    ok = [s == StepStatus.SUCCEEDED for s in ups]
    fire_now = {TriggerRule.ALL_SUCCEEDED: done and all(ok), TriggerRule.ALL_DONE: done,
                TriggerRule.ANY_SUCCEEDED: any(ok)}
    verdict = fire_now[job["spec"]["trigger_rule"]]
    if verdict and (job["spec"]["paused"] or not tenancy.take_fires(state, job["team"], 1, state.now_ms)):
        _not_run(state, run, job_id, Reason.PAUSED if job["spec"]["paused"] else Reason.FIRES_PER_MINUTE)
        return True
    if verdict:
        _fire_step(state, run, job_id)
        return True
    if done:
        _upstream_failed(state, run, job_id, ups)
        return True
    return False


def _fire_step(state: State, run: Run, job_id: str) -> None:
    scheduled_ms = state.unscheduled_ms(job_id)
    fire = new_fire(state, job_id, scheduled_ms, PENDING, trigger=_trigger(run), run_id=run["run_id"])
    run["steps"][job_id] = _step(StepStatus.RUNNING, fire["fire_id"])
    state.counters["dependency_fires"] += 1


def _trigger(run: Run) -> str:
    return f"{Trigger.DEPENDENCY}:{run['run_id']}"


def _not_run(state: State, run: Run, job_id: str, why: Reason) -> None:
    """A step whose turn came while its job is paused (a disabled registered job, say), or its
    team is over the fires-per-minute quota: skipped, with a record, and the run goes on."""
    run["steps"][job_id] = _step(StepStatus.SKIPPED, None)
    status = ExecutionStatus.THROTTLED if why == Reason.FIRES_PER_MINUTE else ExecutionStatus.SKIPPED
    history.record(state, job_id, state.now_ms, 0, "", status, reason=why,
                   error=f"run {run['run_id']}: not run ({why})", trigger=_trigger(run))


def _upstream_failed(state: State, run: Run, job_id: str, upstream_statuses: list[str]) -> None:
    run["steps"][job_id] = _step(StepStatus.UPSTREAM_FAILED, None)
    history.record(state, job_id, state.now_ms, 0, "", ExecutionStatus.UPSTREAM_FAILED,
                   reason=Reason.UPSTREAM_FAILED, trigger=_trigger(run),
                   error=f"run {run['run_id']}: upstreams ended {', '.join(sorted(set(upstream_statuses)))}")
    state.counters["upstream_failed"] += 1


def trigger_error(state: State, job_id: str, params: Any, force: Any) -> Result | None:
    """A manual run waits until the job's current one is over, unless forced."""
    too_big = isinstance(params, dict) and (json_depth(params) > BODY_DEPTH_MAX
                                            or len(msgpack.packb(params, use_bin_type=True)) > PARAMS_BYTES_MAX)
    if not isinstance(params, dict) or too_big or not isinstance(force, bool):
        message = f"an object of at most {PARAMS_BYTES_MAX} bytes, nested at most {BODY_DEPTH_MAX} deep"
        return {"error": "invalid", "detail": f"params: {message}", "errors": [{"field": "params", "message": message}]}
    if force:
        return None
    job = state.jobs[job_id]
    due = [ms for ms in job["active_fires"] if state.book.fires[fire_id_of(job_id, ms)]["due_ms"] <= state.now_ms]
    if due or _open_runs(state, job_id):
        return {"error": "conflict", "detail": f"a run of {job_id!r} is in progress; trigger with force to run "
                "another one anyway"}
    return None


def _open_runs(state: State, job_id: str) -> list[Run]:
    return [run for run in state.runs.values() if run["root"] == job_id and run["finished_ms"] is None]


def run_view(run: Run) -> dict[str, Any]:
    return {"run_id": run["run_id"], "root": run["root"], "team": run["team"], "started_ms": run["started_ms"],
            "finished_ms": run["finished_ms"], "steps": {k: dict(v) for k, v in run["steps"].items()}}
