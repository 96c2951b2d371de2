"""Workflows inside the replicated state: job dependencies (a DAG) and their runs.

A job may declare `depends_on` (upstream job ids of its team) and a
`trigger_rule`. A fire of a job that others depend on starts a run (its run id
is that fire's id); the run holds a step for that root and every job
downstream of it. When a step's fire ends, each dependent whose upstreams in
the run have settled either fires (a pending fire with trigger
`dependency:<run id>`, carrying the run id) or is marked `upstream_failed`,
which settles it for its own dependents in turn. Upstreams outside the run
(not downstream of its root) are not waited for.

Like lifecycle.py: functions of the state, deterministic (every set is walked
in sorted order), no clock but `state.now_ms`, bounded (runs_max).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from schedb import tenancy
from schedb.fires import PENDING, fire_id_of
from schedb.jobspec import BODY_DEPTH_MAX, json_depth

if TYPE_CHECKING:
    from schedb.state import Result, State

RULES = ("all_succeeded", "all_done", "any_succeeded")
SETTLED = ("succeeded", "failed", "skipped", "upstream_failed", "deleted")
WAITING, RUNNING = "waiting", "running"
RUN_STEPS_MAX = 1_000
PARAMS_BYTES_MAX = 4_096


def init_state(state: State) -> None:
    state.dependents = {}  # upstream job id -> sorted ids of the jobs that depend on it
    state.runs = {}  # run id -> {run_id, root, team, started_ms, finished_ms, steps: {job_id: step}}
    state.finished_runs = {}  # run ids in the order they finished: the first to go


def upgrade(state: State) -> None:
    """A snapshot from before workflows: no runs yet, and its jobs depend on nothing."""
    if not hasattr(state, "runs"):
        init_state(state)
        for job in state.jobs.values():
            job["spec"].setdefault("depends_on", [])
            job["spec"].setdefault("trigger_rule", RULES[0])
        for counter in ("dependency_fires", "upstream_failed"):
            state.counters.setdefault(counter, 0)
    if not hasattr(state, "finished_runs"):
        state.finished_runs = {r: None for r, run in state.runs.items() if run["finished_ms"] is not None}


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


# -- runs ------------------------------------------------------------------------


def fire_created(state: State, fire: dict[str, Any]) -> None:
    """A fire of a job others depend on, outside a run, starts one."""
    job_id = fire["job_id"]
    if fire["run_id"] or not state.dependents.get(job_id):
        return
    steps = {job: {"status": WAITING, "fire_id": None} for job in _downstream(state, job_id)}
    steps[job_id] = {"status": RUNNING, "fire_id": fire["fire_id"]}
    run_id = fire["fire_id"]
    if run_id in state.runs:  # a replay or backfill of the same instant: a run of its own
        run_id = f"{run_id}~{state.applied}"
    fire["run_id"] = run_id
    state.runs[run_id] = {"run_id": run_id, "root": job_id, "team": state.jobs[job_id]["team"],
                          "started_ms": state.now_ms, "finished_ms": None, "steps": steps}
    _bound_runs(state)


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


def _finish(state: State, run: dict[str, Any]) -> None:
    if run["finished_ms"] is None and all(step["status"] in SETTLED for step in run["steps"].values()):
        run["finished_ms"] = state.now_ms
        state.finished_runs[run["run_id"]] = None


def fire_ended(state: State, fire: dict[str, Any], result: str) -> None:
    """A step's fire ended (succeeded, failed, skipped, deleted): settle what now can be."""
    run = state.runs.get(fire.get("run_id") or "")
    step = run["steps"].get(fire["job_id"]) if run is not None else None
    if run is None or step is None or step["status"] != RUNNING or step["fire_id"] != fire["fire_id"]:
        return  # not (or no longer) this run's step
    step["status"] = result
    _settle_from(state, run, [fire["job_id"]])


def _settle_from(state: State, run: dict[str, Any], settled: list[str]) -> None:
    """Decide the waiting dependents of the settled steps, and theirs in turn."""
    while settled:
        upstream = settled.pop()
        for dependent in state.dependents.get(upstream, []):
            step = run["steps"].get(dependent)
            decided = step is not None and step["status"] == WAITING and _decide(state, run, dependent)
            if decided and run["steps"][dependent]["status"] in SETTLED:  # upstream_failed, skipped, deleted
                settled.append(dependent)
    _finish(state, run)


def graph_changed(state: State, job_id: str) -> None:
    """A job was deleted, or its depends_on changed: its waiting steps in open runs are decided
    again (a deleted one becomes `deleted`), or those runs would never finish."""
    for run in list(state.runs.values()):
        step = run["steps"].get(job_id)
        if run["finished_ms"] is None and step is not None and step["status"] == WAITING \
                and _decide(state, run, job_id) and run["steps"][job_id]["status"] in SETTLED:
            _settle_from(state, run, [job_id])
        _finish(state, run)


def root_withdrawn(state: State, fire: dict[str, Any]) -> bool:
    """The root of a run taken back before it was due (paused, rescheduled): the run never
    happened, so it goes without deciding anything. True if the fire was a run's root."""
    run = state.runs.get(fire.get("run_id") or "")
    if run is None or run["steps"][run["root"]]["fire_id"] != fire["fire_id"]:
        return False
    del state.runs[run["run_id"]]
    return True


def _decide(state: State, run: dict[str, Any], job_id: str) -> bool:
    """Fire the dependent, or mark it upstream_failed, if its upstreams allow; True if decided."""
    job = state.jobs.get(job_id)
    if job is None:
        run["steps"][job_id]["status"] = "deleted"
        return True
    ups = [run["steps"][u]["status"] for u in job["spec"]["depends_on"] if u in run["steps"]]
    done = all(s in SETTLED for s in ups)
    ok = [s == "succeeded" for s in ups]
    fire_now = {"all_succeeded": done and all(ok), "all_done": done, "any_succeeded": any(ok)}
    verdict = fire_now[job["spec"]["trigger_rule"]]
    if verdict and (job["spec"]["paused"] or not tenancy.take_fires(state, job["team"], 1, state.now_ms)):
        _not_run(state, run, job_id, "paused" if job["spec"]["paused"] else "fires_per_minute")
        return True
    if verdict:
        _fire_step(state, run, job_id)
        return True
    if done:
        _upstream_failed(state, run, job_id, ups)
        return True
    return False


def _fire_step(state: State, run: dict[str, Any], job_id: str) -> None:
    scheduled_ms = state.now_ms
    while fire_id_of(job_id, scheduled_ms) in state.book.fires:
        scheduled_ms += 1
    fire = state.new_fire(job_id, scheduled_ms, PENDING, trigger=f"dependency:{run['run_id']}",
                          run_id=run["run_id"])
    run["steps"][job_id] = {"status": RUNNING, "fire_id": fire["fire_id"]}
    state.counters["dependency_fires"] += 1


def _not_run(state: State, run: dict[str, Any], job_id: str, why: str) -> None:
    """A step whose turn came while its job is paused (a disabled registered job, say), or its
    team is over the fires-per-minute quota: skipped, with a record, and the run goes on."""
    from schedb.lifecycle import record  # lifecycle imports this module

    run["steps"][job_id] = {"status": "skipped", "fire_id": None}
    record(state, job_id, state.now_ms, 0, "", "throttled" if why == "fires_per_minute" else "skipped",
           reason=why, error=f"run {run['run_id']}: not run ({why})", trigger=f"dependency:{run['run_id']}")


def _upstream_failed(state: State, run: dict[str, Any], job_id: str, upstream_statuses: list[str]) -> None:
    from schedb.lifecycle import record  # lifecycle imports this module

    run["steps"][job_id] = {"status": "upstream_failed", "fire_id": None}
    record(state, job_id, state.now_ms, 0, "", "upstream_failed", reason="upstream_failed",
           error=f"run {run['run_id']}: upstreams ended {', '.join(sorted(set(upstream_statuses)))}",
           trigger=f"dependency:{run['run_id']}")
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


def _open_runs(state: State, job_id: str) -> list[dict[str, Any]]:
    return [run for run in state.runs.values() if run["root"] == job_id and run["finished_ms"] is None]


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["run_id"], "root": run["root"], "team": run["team"], "started_ms": run["started_ms"],
            "finished_ms": run["finished_ms"], "steps": {k: dict(v) for k, v in run["steps"].items()}}

