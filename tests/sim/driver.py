"""A single real StateMachine driven as a one-node cluster would drive it, without Raft or
executors: the leader's dispatcher plans an AssignFires every step (schedb.fire_queries.plan_batch),
an executor completes each fire when it falls due (schedb.policies decides fire or skip), and
the operator (devkit.sim.workload) acts in between. Every command applied is recorded as the
oracle reads the log (devkit.sim.oracle.Applied).

Faults a test may inject, each a bug the oracle must catch:
- drop_completion: the first scheduled fire of (job id, at or after ms) never completes;
- skip_occurrence: the first occurrence of (job id, at or after ms) is skipped as a buggy state
  machine would: the item leaves the AssignFires and the job moves past it, no fire, no record.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from devkit.sim.oracle import Applied
from devkit.sim.workload import T0, Operator, initial_jobs, known_dead_letters, known_jobs
from schedb.commands import AssignFires, Command, CompleteFires, CreateJobs, Outcome, RegisterNode
from schedb.fire_queries import PlanInputs, plan_batch
from schedb.fsm.machine import StateMachine
from schedb.policies import verdict

NODE = "n1"
STEP_MS = 300
LOOKAHEAD_MS = 5_000
QUIET_MS = 60_000  # no operator action in the last minute
FAILURE_SHARE = 0.08  # attempts the receiver answers with a 500


@dataclass
class Faults:
    drop_completion: tuple[str, int] | None = None
    skip_occurrence: tuple[str, int] | None = None
    dropped: list[str] = field(default_factory=list)  # fire ids whose completion was dropped
    skipped: list[str] = field(default_factory=list)  # fire ids of the occurrences skipped


@dataclass
class SimRun:
    state: StateMachine
    applied: list[Applied]
    end_ms: int
    operator: Operator
    operator_commands: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # "Command: error" -> times
    unexplained: int = 0  # refusals without a detail saying why

    def apply(self, command: Command, by_operator: bool = False) -> dict[str, Any]:
        result = self.state.apply(command)
        self.applied.append(Applied(len(self.applied) + 1, command, result, self.state.now_ms))
        if by_operator:
            self.operator_commands += 1
            for error, detail in _errors(command, result):
                self.refusals[f"{type(command).__name__}: {error}"] += 1
                self.unexplained += not detail
        return result


def _errors(command: Command, result: dict[str, Any]) -> list[tuple[str, str]]:
    """(error code, detail) of each refusal in the result (CreateJobs: one per spec)."""
    if "error" in result:
        return [(str(result["error"]), str(result.get("detail") or ""))]
    if isinstance(command, CreateJobs):
        return [(str(row["error"]), str(row["detail"] or "")) for row in result["results"] if row["error"]]
    return []


def simulate(seed: int, minutes: int = 10, jobs: int = 60, faults: Faults | None = None) -> SimRun:
    faults = faults or Faults()
    operator_rng, receiver_rng = random.Random(seed), random.Random(seed * 7919 + 1)
    run = SimRun(StateMachine(), [], T0 + minutes * 60_000, Operator(first_new_job=jobs))
    run.apply(AssignFires(T0, [], leader_id=NODE))  # the leader's first tick: replicated time starts
    run.apply(RegisterNode(T0, NODE, "10.0.0.1:9001", "10.0.0.1:8001"))
    for command in initial_jobs(operator_rng, jobs, T0):
        run.apply(command, by_operator=True)
    now_ms = T0
    while now_ms < run.end_ms:
        now_ms += STEP_MS
        if now_ms < run.end_ms - QUIET_MS and run.operator.due(now_ms):
            _operate(run, operator_rng, now_ms)
        _dispatch(run, now_ms, faults)
        _execute(run, receiver_rng, now_ms, faults)
    return run


def _operate(run: SimRun, rng: random.Random, now_ms: int) -> None:
    jobs_known = known_jobs(run.state, now_ms)
    command = run.operator.next_action(rng, now_ms, jobs_known, known_dead_letters(run.state))
    if command is not None:
        run.apply(command, by_operator=True)


def _dispatch(run: SimRun, now_ms: int, faults: Faults) -> None:
    plan = PlanInputs(now_ms=now_ms, lookahead_ms=LOOKAHEAD_MS, self_id=NODE, candidates=[NODE], evacuate={},
                      scan_leases=True, started_here=lambda fire: "unstarted", clock_held=None, max_offset_ms=500)
    batch = plan_batch(run.state, plan)
    items = [item for item in batch.items if not _skipped(run, item, faults)]
    run.apply(AssignFires(now_ms, items, reassign=batch.reassign, release=batch.release, leader_id=NODE))


def _skipped(run: SimRun, item: list[Any], faults: Faults) -> bool:
    """The skip_occurrence fault: the occurrence vanishes from the state (a state machine bug)."""
    target = faults.skip_occurrence
    job_id, scheduled_ms, _ = item
    if target is None or faults.skipped or job_id != target[0] or scheduled_ms < target[1]:
        return False
    faults.skipped.append(f"{job_id}:{scheduled_ms}")
    run.state.schedule_from(job_id, scheduled_ms)
    return True


def _execute(run: SimRun, rng: random.Random, now_ms: int, faults: Faults) -> None:
    """Each fire of the node that is due and whose attempt has no outcome yet: fire or skip it."""
    rows = []
    for fire in run.state.book.of_node(NODE):
        if fire["due_ms"] > now_ms or fire["attempt"] in fire["reported"] or _dropped(fire, faults):
            continue
        decision = verdict(run.state, fire, now_ms, run.state.limits.misfire_grace_ms)
        if decision is None:
            continue
        if not decision.fire:
            outcome = Outcome(fire["fire_id"], fire["attempt"], decision.status, 0, now_ms, now_ms,
                              error=f"{decision.reason}: {decision.detail}")
        elif rng.random() < FAILURE_SHARE:
            outcome = Outcome(fire["fire_id"], fire["attempt"], "failed", 500, now_ms, now_ms + 20, error="HTTP 500")
        else:
            outcome = Outcome(fire["fire_id"], fire["attempt"], "succeeded", 200, now_ms, now_ms + 20)
        rows.append(outcome.to_list())
    if rows:
        run.apply(CompleteFires(now_ms, NODE, rows))


def _dropped(fire: dict[str, Any], faults: Faults) -> bool:
    """The drop_completion fault: the fire's outcome never commits."""
    target = faults.drop_completion
    if fire["fire_id"] in faults.dropped:
        return True
    if target is None or faults.dropped or fire["job_id"] != target[0] or fire["scheduled_ms"] < target[1] \
            or fire["trigger"] != "schedule":
        return False
    faults.dropped.append(fire["fire_id"])
    return True
