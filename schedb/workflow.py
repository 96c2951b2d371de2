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

from schedb.fires import PENDING, fire_id_of

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


def upgrade(state: State) -> None:
    """A snapshot from before workflows: no runs yet, and its jobs depend on nothing."""
    if not hasattr(state, "runs"):
        init_state(state)
        for job in state.jobs.values():
            job["spec"].setdefault("depends_on", [])
            job["spec"].setdefault("trigger_rule", RULES[0])
        for counter in ("dependency_fires", "upstream_failed"):
            state.counters.setdefault(counter, 0)


# -- the graph -------------------------------------------------------------------


def dependency_error(state: State, spec: dict[str, Any], team: str) -> Result | None:
    """Upstreams must be jobs of the same team, and the job must not end up upstream of itself."""
    job_id = spec["id"]
    for upstream in spec["depends_on"]:
        other = state.jobs.get(upstream)
        if other is None or other["team"] != team:
            return _invalid(f"job {upstream!r} does not exist")
    cycle = _path(state, spec["depends_on"], job_id)
    if cycle is not None:
        names = " → ".join([job_id, *cycle])
        return _invalid(f"a dependency cycle: {names}")
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
    for upstream in set(old_upstreams) - set(new_upstreams):
        rest = [d for d in state.dependents.get(upstream, []) if d != job_id]
        if rest:
            state.dependents[upstream] = rest
        else:
            state.dependents.pop(upstream, None)
    for upstream in set(new_upstreams) - set(old_upstreams):
        state.dependents[upstream] = sorted({*state.dependents.get(upstream, []), job_id})


def deletion_error(state: State, job_id: str, force: Any) -> Result | None:
    dependents = state.dependents.get(job_id, [])
    if dependents and force is not True:
        return {"error": "conflict", "detail": f"jobs {', '.join(dependents)} depend on {job_id!r}; delete them "
                f"first, or delete with force (they then lose this dependency)"}
    return None


def unlink_deleted(state: State, job_id: str) -> None:
    """A forced delete: the dependents no longer depend on the job (a new version of each)."""
    for dependent in state.dependents.pop(job_id, []):
        job = state.jobs[dependent]
        job["spec"] = {**job["spec"], "depends_on": [u for u in job["spec"]["depends_on"] if u != job_id]}
        job["version"] += 1
        job["updated_ms"] = state.now_ms
    link(state, job_id, state.jobs[job_id]["spec"]["depends_on"], [])


# -- runs ------------------------------------------------------------------------


def fire_created(state: State, fire: dict[str, Any]) -> None:
    """A fire of a job others depend on, outside a run, starts one."""
    job_id = fire["job_id"]
    if fire["run_id"] or not state.dependents.get(job_id):
        return
    steps = {job: {"status": WAITING, "fire_id": None} for job in _downstream(state, job_id)}
    steps[job_id] = {"status": RUNNING, "fire_id": fire["fire_id"]}
    run_id = fire["run_id"] = fire["fire_id"]
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
    """Oldest finished runs go first; a run still going goes only if there are too many of those."""
    excess = len(state.runs) - state.limits.runs_max
    if excess <= 0:
        return
    finished = [r for r, run in state.runs.items() if run["finished_ms"] is not None][:excess]
    for run_id in finished or list(state.runs)[:excess]:
        del state.runs[run_id]


def fire_ended(state: State, fire: dict[str, Any], result: str) -> None:
    """A step's fire ended (succeeded, failed, skipped, deleted): settle what now can be."""
    run = state.runs.get(fire.get("run_id") or "")
    if run is None or fire["job_id"] not in run["steps"]:
        return
    run["steps"][fire["job_id"]]["status"] = result
    settled = [fire["job_id"]]
    while settled:
        upstream = settled.pop()
        for dependent in state.dependents.get(upstream, []):
            step = run["steps"].get(dependent)
            decided = step is not None and step["status"] == WAITING and _decide(state, run, dependent)
            if decided and run["steps"][dependent]["status"] in SETTLED:  # upstream_failed, or deleted
                settled.append(dependent)
    if all(step["status"] in SETTLED for step in run["steps"].values()):
        run["finished_ms"] = state.now_ms


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


def _upstream_failed(state: State, run: dict[str, Any], job_id: str, upstream_statuses: list[str]) -> None:
    from schedb.lifecycle import record  # lifecycle imports this module

    run["steps"][job_id] = {"status": "upstream_failed", "fire_id": None}
    record(state, job_id, state.now_ms, 0, "", "upstream_failed", reason="upstream_failed",
           error=f"run {run['run_id']}: upstreams ended {', '.join(sorted(set(upstream_statuses)))}",
           trigger=f"dependency:{run['run_id']}")
    state.counters["upstream_failed"] += 1


def trigger_error(state: State, job_id: str, params: Any, force: Any) -> Result | None:
    """A manual run waits until the job's current one is over, unless forced."""
    too_big = isinstance(params, dict) and len(msgpack.packb(params, use_bin_type=True)) > PARAMS_BYTES_MAX
    if not isinstance(params, dict) or too_big or not isinstance(force, bool):
        return {"error": "invalid", "detail": f"params: an object of at most {PARAMS_BYTES_MAX} bytes",
                "errors": [{"field": "params", "message": f"an object of at most {PARAMS_BYTES_MAX} bytes"}]}
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


def _invalid(message: str) -> Result:
    return {"error": "invalid", "detail": f"depends_on: {message}",
            "errors": [{"field": "depends_on", "message": message}]}
