"""The invariants, checked as the run goes and at its end (docs/simulation.md lists them).

Raft commits an entry before any node applies it, so the first node to apply command i tells
the referee what the committed log holds at i: its bytes, its result, the replicated time
after it, the execution records it added. Against that:

- every replica applies the same commands in the same order and gets the same results, and
  replicas that applied the same prefix have the same state (canonical bytes, every field:
  every DIGEST_EVERY commands, and all of them at the end);
- a fire id has at most one committed successful outcome;
- replicated time never runs ahead of the fastest node clock by more than the offset bound;
- every bound of the state holds (schedb.fsm.invariants), every BOUNDS_EVERY commands;
- a webhook call is made only by the node the committed state gives that attempt to (the
  most advanced live replica's state): a node never calls a fire after it moved;
- a skipped or missed report of an attempt older than the fire's current one never ends the
  fire (a stale report: the current attempt goes on; only a success ends it from any attempt);
- a leader never gives up a fire it holds itself as `unknown` (executor lost: an at-most-once
  fire is then never run) while its own executor knows it never started that attempt;
- at the end: a fire succeeds at the receiver at most once, except where its caller died
  before its outcome committed (at-least-once redelivery, as promised); a call its caller saw
  succeed has its attempt's outcome committed, unless its caller died, its job was deleted or
  another attempt's success ended the fire; and no scheduled occurrence is lost
  (devkit.sim.oracle).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from devkit.sim.oracle import Applied, lost_occurrences
from devkit.sim.receiver import Call
from devkit.sim.replica import SimReplica
from devkit.sim.silence import CutOffs
from devkit.sim.world import World
from schedb.commands import AssignFires, BackfillJob, Command, CompleteFires, ReplayDeadLetter
from schedb.executor import Executor
from schedb.fsm import invariants
from schedb.fsm.machine import CANONICAL_FIELDS, StateMachine, _canonical
from schedb.fsm.model import Execution, ExecutionStatus, Fire, Result
from schedb.local_fires import PENDING

DIGEST_EVERY = 1024  # the whole state's bytes: more often costs more than the rest of the checks
MEASURING_ERROR_MS = 100  # the clock watch measures offsets to half a round trip
STALE_SKIPS = frozenset({ExecutionStatus.SKIPPED, ExecutionStatus.MISSED})
OUTCOME_TAIL_S = 30.0  # a call this close to the end may still be reporting (an answer takes up to 4 s)
BOUNDS_EVERY = 4096
# How long an executor back in touch with the leader may take to commit a waiting outcome: a
# submit's timeout (2 s) and the flusher's longest retry delay (1 s), with slack.
REPORT_WINDOW_S = 4.0


class Violation(AssertionError):
    """An invariant broke: the run stops at the first one, which names it."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


class Referee:
    def __init__(self, world: World, max_offset_ms: int, replicas: Callable[[], Iterable[SimReplica]],
                 executor_of: Callable[[str], Executor | None] = lambda node_id: None) -> None:
        self._world = world
        self._max_offset_ms = max_offset_ms
        self._replicas = replicas  # the live processes' replicas
        self._executor_of = executor_of  # a live node's executor
        self.applied: list[Applied] = []  # the committed log as the oracle reads it
        self._entries: list[bytes] = []
        self._results: list[Result] = []
        self._digests: dict[int, bytes] = {}
        self.successes: Counter[str] = Counter()  # fire id → committed successful outcomes
        self._replicated_ms = 0  # replicated time after the last command (it only moves forward)
        self.clock_grace_s = 0.0  # after a clock step, how long the clock watch may take to see it
        # A backfill or a dead letter's replay fires an occurrence again under its id, by design (an
        # operator asked; the receiver sees the same Idempotency-Key): each is a new instance.
        self.instances: Counter[str] = Counter()
        # (fire id, attempt, instance) → true time its first record committed
        self.committed_at: dict[tuple[str, int, int], float] = {}
        self.ended: dict[tuple[str, int], float] = {}  # (node, incarnation) → true time its process died
        self.cut_offs = CutOffs(world)  # when each node was paused or cut from a leader
        # (fire id, attempt, instance) → (true time, leader) of the AssignFires that made that
        # attempt by moving the fire, its lease ended, from another executor (a reassignment)
        self.reassigned_at: dict[tuple[str, int, int], tuple[float, str]] = {}
        self.on_commit: Callable[[int, Command, Result], None] | None = None  # the trace's
        self._live_attempts: dict[str, int] = {}  # before a CompleteFires' first apply: its live fires' attempts
        self._leases: dict[str, int] = {}  # before an AssignFires' first apply: the leases of the fires it moves

    # -- before every apply, on every replica ---------------------------------------------

    def before_apply(self, replica: SimReplica, command: Command) -> None:
        """replica is about to apply command: before its first apply, note the current attempt of
        each live fire a CompleteFires reports on (_check_stale_reports), and the lease of each
        fire an AssignFires moves (_note_reassigned)."""
        if replica.state.applied != len(self._entries):
            return
        if isinstance(command, AssignFires):
            self._leases = {fire["fire_id"]: fire["lease_end_ms"] for fire, _ in _moved(replica.state, command)}
        if not isinstance(command, CompleteFires):
            return
        self._live_attempts = {}
        for row in command.outcomes if isinstance(command.outcomes, list) else ():
            fire = replica.state.book.get(row[0]) if isinstance(row, list) and row and isinstance(row[0], str) \
                else None
            if fire is not None:
                self._live_attempts[fire["fire_id"]] = fire["attempt"]

    # -- after every apply, on every replica ----------------------------------------------

    def on_apply(self, replica: SimReplica, data: bytes, command: Command, result: Result,
                 added: list[Execution]) -> None:
        """replica applied command (data: its log bytes) with result, adding these executions."""
        index = replica.state.applied
        if index == len(self._entries) + 1:
            self._first_apply(replica, data, command, result, added)
        elif index > len(self._entries) + 1:
            raise Violation("log_order", f"{replica.node_id} applied command {index} before any node applied "
                            f"{len(self._entries) + 1}")
        elif data != self._entries[index - 1]:
            raise Violation("log_matching", f"{replica.node_id} applied another command {index}: "
                            f"{type(command).__name__}")
        elif result != self._results[index - 1]:
            raise Violation("same_result", f"{replica.node_id} got {result!r} for command {index}, "
                            f"the first node {self._results[index - 1]!r}")
        if index % DIGEST_EVERY == 0:
            self._check_digest(replica, index)

    def _check_digest(self, replica: SimReplica, index: int) -> None:
        digest = _digest(replica.state)
        expected = self._digests.setdefault(index, digest)
        if digest != expected:
            raise Violation("equal_state", f"{replica.node_id}'s state after command {index} differs from "
                            "the first node's (canonical bytes)")

    def _first_apply(self, replica: SimReplica, data: bytes, command: Command, result: Result,
                     added: list[Execution]) -> None:
        state, index = replica.state, replica.state.applied
        self._entries.append(data)
        self._results.append(result)
        self.applied.append(Applied(index, command, result, state.now_ms))
        if self.on_commit is not None:
            self.on_commit(index, command, result)
        self._note_executions(added)
        if isinstance(command, BackfillJob) and result.get("ok"):
            self._new_instances(fire["fire_id"] for fire in state.book.fires.values()
                                if fire["job_id"] == command.job_id and fire["trigger"] == "backfill")
        if isinstance(command, ReplayDeadLetter) and result.get("ok"):
            self._new_instances([command.fire_id])
        if isinstance(command, CompleteFires):
            self._check_stale_reports(state, added)
        if isinstance(command, AssignFires):
            self._check_time(state, index)
            self._check_abandoned(command.leader_id, added)
            self._note_reassigned(state, command)
        if index % BOUNDS_EVERY == 0:
            check_bounds(state)

    def _note_reassigned(self, state: StateMachine, command: AssignFires) -> None:
        """The new attempts this AssignFires made of fires whose lease had ended (by the
        replicated time it applied at): their true time and leader (reassigned_at)."""
        for fire, attempt in _moved(state, command):
            lease_end_ms = self._leases.get(fire["fire_id"])
            if fire["attempt"] == attempt + 1 and lease_end_ms is not None and lease_end_ms <= state.now_ms:
                key = (fire["fire_id"], fire["attempt"], self.instances[fire["fire_id"]])
                self.reassigned_at.setdefault(key, (self._world.now, command.leader_id))
        self._leases = {}

    def _note_executions(self, added: list[Execution]) -> None:
        for execution in added:
            key = (execution["fire_id"], execution["attempt"], self.instances[execution["fire_id"]])
            self.committed_at.setdefault(key, self._world.now)
            if execution["status"] == "succeeded":
                self.successes[execution["fire_id"]] += 1
                if self.successes[execution["fire_id"]] > 1:
                    raise Violation("one_success", f"fire {execution['fire_id']} has two committed successes "
                                    f"(the second: attempt {execution['attempt']} by {execution['node']})")

    def _new_instances(self, fire_ids: Iterable[str]) -> None:
        """An operator's backfill or replay fires these again, under their ids: new instances."""
        for fire_id in fire_ids:
            self.successes[fire_id] = 0
            self.instances[fire_id] += 1

    def _check_time(self, state: StateMachine, index: int) -> None:
        """When a leader's assignment moves replicated time, it is not ahead, beyond the offset
        bound (and the clock watch's measuring error), of every majority of running nodes whose
        clocks agree with one another: replicated time is the time an agreeing majority keeps,
        never one fast clock's. Without an agreeing majority (clocks stepped every which way,
        seed 24) nothing is judged; a dead node's clock does not count (its last samples may
        still stand for it: seed 19). It never goes back, so only moves count (seed 20153)."""
        moved, self._replicated_ms = state.now_ms > self._replicated_ms, max(self._replicated_ms, state.now_ms)
        if not moved or self._world.now - self._world.last_clock_step < self.clock_grace_s:
            return  # the clock watch learns of another node's step within a probe round or two (seed 50216)
        clocks = sorted(p.wall_ms() for p in self._world.processes.values() if p.alive)
        size = len(clocks) // 2 + 1
        agreeing = [clocks[i + size - 1] for i in range(len(clocks) - size + 1)
                    if clocks[i + size - 1] - clocks[i] <= self._max_offset_ms]
        if agreeing and state.now_ms > max(agreeing) + self._max_offset_ms + MEASURING_ERROR_MS:
            raise Violation("replicated_time", f"command {index} moved replicated time to {state.now_ms}, "
                            f"{state.now_ms - max(agreeing)} ms ahead of every agreeing majority of the clocks")

    def _check_stale_reports(self, state: StateMachine, added: list[Execution]) -> None:
        """A skipped or missed report of an older attempt than the live fire's current one is
        recorded, and the current attempt goes on (its retry, its outcome, its dead letter), unless
        the same batch ended it otherwise (a success, or the current attempt's own outcome)."""
        ended_otherwise = {e["fire_id"] for e in added if e["status"] == ExecutionStatus.SUCCEEDED
                           or e["attempt"] >= self._live_attempts.get(e["fire_id"], 0)}
        for execution in added:
            current = self._live_attempts.get(execution["fire_id"])
            if current is None or execution["attempt"] >= current or execution["status"] not in STALE_SKIPS:
                continue
            if state.book.get(execution["fire_id"]) is None and execution["fire_id"] not in ended_otherwise:
                raise Violation("stale_report", f"a {execution['status']} report of {execution['fire_id']} attempt "
                                f"{execution['attempt']} ended the fire, whose current attempt was {current}")
        self._live_attempts = {}

    def _check_abandoned(self, leader_id: str, added: list[Execution]) -> None:
        """The leader's AssignFires gave up a fire it held itself (executor lost: `unknown`, an
        at-most-once fire is never run again): its own executor must not know that it never
        started that attempt (its local table still has it, not started, armed since its start:
        Executor.start_state). A new leader releases such fires as the same attempt."""
        executor = self._executor_of(leader_id) if leader_id else None
        if executor is None:
            return
        for execution in added:
            if execution["status"] != ExecutionStatus.UNKNOWN or execution["node"] != leader_id:
                continue
            local = executor._fires.get((execution["fire_id"], execution["attempt"]))
            if local is not None and local.phase in PENDING and executor.start_state(local.fire) == "unstarted":
                raise Violation("abandoned_unstarted", f"leader {leader_id} gave up {execution['fire_id']} attempt "
                                f"{execution['attempt']} as unknown, though its executor never started it")

    # -- each webhook call ------------------------------------------------------------------

    def on_call(self, call: Call) -> None:
        """The call goes out now: the committed state must still give this attempt to the caller."""
        call.instance = self.instances[call.fire_id]
        committed = max(self._replicas(), key=lambda r: r.state.applied, default=None)
        fire = committed.state.book.get(call.fire_id) if committed is not None else None
        if fire is not None and (fire["node"], fire["attempt"]) != (call.node, call.attempt):
            raise Violation("moved_fire_called", f"{call.node} called {call.fire_id} attempt {call.attempt}, "
                            f"which the log gave to {fire['node']} as attempt {fire['attempt']}")

    # -- at the end ---------------------------------------------------------------------------

    def final(self, calls: list[Call]) -> None:
        """After the quiet period: every replica caught up, equal, within bounds; nothing doubled
        at the receiver, nothing lost."""
        replicas = sorted(self._replicas(), key=lambda r: r.node_id)
        for replica in replicas:
            if replica.state.applied != len(self._entries):
                raise Violation("caught_up", f"{replica.node_id} applied {replica.state.applied} of "
                                f"{len(self._entries)} commands after the quiet period")
        digests = {replica.node_id: _digest(replica.state) for replica in replicas}
        if len(set(digests.values())) > 1:
            first, *others = replicas
            apart = [f"{r.node_id} in {_fields_apart(r.state, first.state)}" for r in others
                     if digests[r.node_id] != digests[first.node_id]]
            raise Violation("equal_state", f"after command {len(self._entries)}, {first.node_id}'s state differs "
                            f"from {', '.join(apart)}")
        final_state = replicas[0].state
        check_bounds(final_state)
        self._check_doubled(calls)
        self._check_outcomes(calls, final_state)
        lost = lost_occurrences(self.applied, final_state, final_state.now_ms)
        if lost:
            raise Violation("lost_occurrence", f"{len(lost)} lost; the first: {lost[0]}")

    def _check_doubled(self, calls: list[Call]) -> None:
        """Two calls of one fire that both succeeded, though the first caller lived to commit
        its outcome (or still lives): the receiver got it twice with nothing to excuse it. A
        caller that was cut off from the leader (paused, or a link between them cut) when the
        leader gave the fire to another executor as a new attempt, before its outcome could
        commit, was to the cluster one that died: that is at-least-once redelivery too."""
        first: dict[tuple[str, int], Call] = {}
        for call in calls:
            if call.status != "succeeded":
                continue
            key = (call.fire_id, call.instance)
            earlier = first.get(key)
            if earlier is None:
                first[key] = call
                continue
            died = self.ended.get((earlier.node, earlier.incarnation))
            committed = self.committed_at.get((earlier.fire_id, earlier.attempt, earlier.instance))
            if died is not None and (committed is None or committed > died):
                first[key] = call  # at-least-once: its caller died before its outcome committed
                continue
            if self._cut_off_when_moved(earlier, call, committed):
                first[key] = call  # at-least-once: its caller was cut off from the leader, as if dead
                continue
            raise Violation("doubled_delivery", f"{call.fire_id} succeeded at the receiver twice: attempt "
                            f"{earlier.attempt} by {earlier.node} at {earlier.at:.3f} s, attempt {call.attempt} "
                            f"by {call.node} at {call.at:.3f} s")

    def _cut_off_when_moved(self, earlier: Call, call: Call, committed: float | None) -> bool:
        moved = self.reassigned_at.get((call.fire_id, call.attempt, call.instance)) \
            if call.attempt > earlier.attempt else None
        if moved is None:
            return False
        at, leader = moved
        return (committed is None or committed > at) and \
            self.cut_offs.cut_off_within(earlier.node, leader, max(earlier.at, at - REPORT_WINDOW_S), at)

    def _check_outcomes(self, calls: list[Call], final_state: StateMachine) -> None:
        """A call its caller saw succeed, by a process that lived to the end (and not in the last
        OUTCOME_TAIL_S): its attempt's outcome committed (any record of that attempt), unless
        another attempt's success ended the fire first (the first success wins) or its job is
        gone (a delete ends a fire without a record). A fire ended by something else, e.g. a
        stale report of an older attempt, loses it."""
        for call in calls:
            if call.status != "succeeded" or (call.node, call.incarnation) in self.ended or \
                    call.at > self._world.now - OUTCOME_TAIL_S:
                continue
            if (call.fire_id, call.attempt, call.instance) in self.committed_at or self.successes[call.fire_id]:
                continue
            if call.job_id not in final_state.jobs or call.instance != self.instances[call.fire_id]:
                continue
            raise Violation("outcome_recorded", f"{call.node} called {call.fire_id} attempt {call.attempt} at "
                            f"{call.at:.3f} s and it succeeded, but no outcome of that attempt committed")


def _moved(state: StateMachine, command: AssignFires) -> Iterator[tuple[Fire, int]]:
    """(the fire in state, the attempt named) of each well-formed reassignment in command."""
    for item in command.reassign if isinstance(command.reassign, list) else ():
        well_formed = isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str) \
            and isinstance(item[1], int)
        fire = state.book.get(item[0]) if well_formed else None
        if fire is not None:
            yield fire, item[1]


def check_bounds(state: StateMachine) -> None:
    found = invariants.violations(state)
    if found:
        raise Violation("state_bounds", "; ".join(found[:3]))


def _digest(state: StateMachine) -> bytes:
    return hashlib.blake2b(state.canonical_bytes(), digest_size=16).digest()


def _fields_apart(state: StateMachine, other: StateMachine) -> str:
    """The fields whose canonical bytes differ (for the report of an equal_state violation)."""
    apart = [name for name in CANONICAL_FIELDS
             if msgpack.packb(_fields(state, name), default=_canonical) != msgpack.packb(_fields(other, name),
                                                                                         default=_canonical)]
    return ", ".join(str(name) for name in apart) or "no single field"


def _fields(state: StateMachine, name: str | tuple[str, ...]) -> Any:
    return [getattr(state, f) for f in name] if isinstance(name, tuple) else getattr(state, name)
