"""One seed: a cluster starts, gets its jobs, lives through faults and operators for the run's
length, heals, goes quiet, and is judged. Everything random comes from the seed.

    0 s        the nodes start; a leader is elected
    5 s        the operator creates the initial jobs (devkit.sim.workload)
    20 s ...   faults (devkit.sim.faults) and operator actions, until the quiet period
    end - 90 s everything heals; no more faults or actions
    end        the final checks (devkit.sim.checks)
"""

from __future__ import annotations

import dataclasses
import gc
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from devkit.sim import workload
from devkit.sim.catchup import CatchUpWatch, draw_budget
from devkit.sim.checks import Violation
from devkit.sim.cluster import Cluster
from devkit.sim.faults import FaultPlan, heal_everything
from devkit.sim.trace import Trace
from devkit.sim.world import T0_MS, SimClock, World
from schedb import clock
from schedb.commands import Command
from schedb.fsm.misfire import COMMAND_WORK_MAX

QUIET_S = 90.0
OPERATOR_EVERY_S = 0.25
SETTLE_S = 10.0


@dataclass
class Options:
    minutes: float = 10.0
    jobs: int = 60
    members: int = 3
    full_trace: bool = False
    faults: bool = True
    operator: bool = True
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # config sections for every node


@dataclass
class Result:
    seed: int
    violation: str | None
    invariant: str | None
    simulated_s: float
    wall_s: float
    steps: int
    calls: int
    commands: int
    faults: dict[str, int]
    trace: str

    @property
    def ok(self) -> bool:
        return self.violation is None


def run_seed(seed: int, options: Options | None = None) -> Result:
    """One run. The garbage collector waits until it ends: what it collects mid-run (a task no
    one waits for, a dropped process's coroutines) and when would otherwise vary from run to run."""
    gc.disable()
    try:
        return _run_seed(seed, options or Options())
    finally:
        gc.enable()
        gc.collect()


def _run_seed(seed: int, options: Options) -> Result:
    started = time.perf_counter()
    world = World()
    trace = Trace(world, options.full_trace)
    watch = CatchUpWatch(draw_budget(seed))
    with clock.use(SimClock(world)), watch.installed():
        trace.install()
        if watch.budget != COMMAND_WORK_MAX:
            trace.event("sim", "catch_up_budget", work=watch.budget)
        sim = Cluster(seed, options.members, trace, options.overrides, world=world)
        plan = FaultPlan(sim, random.Random(sim.rng.random()))
        violation, invariant = None, None
        try:
            _live(sim, plan, options, trace)
        except Violation as exc:
            violation, invariant = str(exc), exc.invariant
            trace.event("sim", "VIOLATION", detail=str(exc))
        except Exception as exc:  # escaped the node's code: a bug there (or in the simulator)
            violation, invariant = f"{type(exc).__name__}: {exc}", "unhandled_exception"
            trace.event("sim", "VIOLATION", detail=violation)
            trace.lines.extend(traceback.format_exc().splitlines()[-12:])
    return Result(seed, violation, invariant, world.now, time.perf_counter() - started, world.steps,
                  len(sim.receiver.calls), len(sim.referee.applied), plan.drawn, trace.text())


def _live(sim: Cluster, plan: FaultPlan, options: Options, trace: Trace) -> None:
    world = sim.world
    end_s = options.minutes * 60
    for node_id in sim.node_ids:
        sim.start(node_id)
    ops_rng = random.Random(sim.rng.random())
    world.at(5.0, _create_jobs, sim, ops_rng, options.jobs)
    if options.faults:
        plan.start(20.0, end_s - QUIET_S)
    if options.operator:
        operator = workload.Operator(first_new_job=options.jobs)
        world.at(20.0, _operate, sim, operator, ops_rng, end_s - QUIET_S)
    world.at(end_s - QUIET_S, heal_everything, sim)
    world.run_until(end_s, lambda: _check_errors(trace))
    _settle(sim, trace)
    _judge(sim)


def _settle(sim: Cluster, trace: Trace) -> None:
    """The leader ticks on: step until every replica has applied the same commands (a tick
    may be on its way), for at most SETTLE_S."""
    deadline = sim.world.now + SETTLE_S
    while len({replica.state.applied for replica in sim.live_replicas()}) > 1 and sim.world.now < deadline:
        sim.world.run_until(sim.world.now + 0.01, lambda: _check_errors(trace))


def _check_errors(trace: Trace) -> None:
    if trace.errors:
        raise Violation("logged_error", trace.errors[0])


def _create_jobs(sim: Cluster, rng: random.Random, count: int) -> None:
    commands = workload.initial_jobs(rng, count, now_ms=T0_MS + int(sim.world.now * 1000))
    node = sim.leader() or sim.node_ids[0]
    for command in commands:
        sim.submit(node, _stamped(command), type(command).__name__, on_result=_retry_on_failure(sim, command))
    sim.receiver.set_job_modes([workload.job_id_of(n) for n in range(count)])


def _retry_on_failure(sim: Cluster, command: Command) -> Any:
    """The initial jobs must exist: an operator tries again, through the leader, until one commits."""
    def on_result(result: Any) -> None:
        if result is None:
            sim.world.after(1.0, lambda: sim.submit(sim.leader() or sim.node_ids[0], _stamped(command),
                                                    type(command).__name__, on_result=on_result))
    return on_result


def _stamped(command: Command) -> Any:
    return lambda now_ms: dataclasses.replace(command, now_ms=now_ms)


def _operate(sim: Cluster, operator: workload.Operator, rng: random.Random, until_s: float) -> None:
    """Now and then an operator acts, through a random running node, on what that node shows."""
    world = sim.world
    if world.now >= until_s:
        return
    world.after(OPERATOR_EVERY_S, _operate, sim, operator, rng, until_s)
    now_ms = T0_MS + int(world.now * 1000)
    if not operator.due(now_ms):
        return
    running = [n for n in sim.node_ids if sim.alive(n) and not world.processes[n].paused and sim.replica(n)]
    if not running:
        return
    node = rng.choice(running)
    replica = sim.replica(node)
    assert replica is not None
    jobs = workload.known_jobs(replica.state, now_ms)
    dead = workload.known_dead_letters(replica.state)
    command = operator.next_action(rng, now_ms, jobs, dead)
    if command is not None:
        sim.submit(node, _stamped(command), _label(command))


def _label(command: Command) -> str:
    job = getattr(command, "job_id", None) or getattr(command, "spec", {}).get("id") or getattr(command, "fire_id", "")
    paused = getattr(command, "spec", {}).get("paused")
    kind = type(command).__name__ + ("(pause)" if paused is True else "")
    return f"{kind}:{job}"


def _judge(sim: Cluster) -> None:
    for node_id in sim.node_ids:
        node = sim.nodes[node_id]
        if hasattr(node, "executor") and sim.alive(node_id):
            node.executor._fires.check()  # the local fires table's own invariants
    sim.referee.final(sim.receiver.calls)
