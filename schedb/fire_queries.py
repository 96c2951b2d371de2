"""The executor's and the dispatcher's queries: decisions about fires that need one consistent
state and more than the state (the fire policies, the delivery view, this node's view of the
other members). The rules of schedb.fsm.queries hold: `(state, *args) -> plain data`, run by
`Replica.read(query, *args)` under the state's lock, copies only (a job's spec excepted: apply
replaces a spec, never changes one), no log. Time comes as an argument, but for `decide_fire`,
which reads the clock under the lock (a wait for the lock must not age its verdict).

- `decide_fire`: an attempt's verdict (fire or skip) and, to fire it, its delivery view, read
  together: both must see the same state.
- `plan_batch`: the dispatcher's next AssignFires (new fires, fires to move, fires to release)
  from one state. What it learns from outside the state (which fires this node's executor
  started, which members hold their fires for their clock) comes in with its inputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from schedb.admission import OVERDUE_AFTER_MS, Load
from schedb.clock import wall_ms
from schedb.delivery_view import DeliveryView, delivery_view
from schedb.fsm import misfire
from schedb.fsm.core import State
from schedb.fsm.model import Fire
from schedb.fsm.occurrences import WITHDRAW_SLACK_MS
from schedb.policies import Verdict, newer_fire_due, verdict
from schedb.schedule import parse_schedule

LATE_PER_BATCH = 100  # jobs behind by more than the misfire grace, per AssignFires
ASSIGN_BATCH_MAX = 2_000
# The overdue fires of an executor are counted from its oldest, up to this many looked at, and
# no further than this many in a row that are not overdue (its fires are held in the order they
# were handed out, which is close to the order they fall due).
OVERDUE_SCAN_MAX = 2_048
OVERDUE_SCAN_RUN = 256
DUE_NOW_MS = 1_000  # with windows set, occurrences are handed out this long ahead at most
ON_TIME_MS = 3_000  # ... and those due up to this long ago first (about on time)
Move = list[Any]  # [fire id, attempt, to node, the node it leaves ("": pending)]


# -- the executor -------------------------------------------------------------------------


class FireDecision(NamedTuple):
    ours: bool  # the state still gives this attempt to this node
    verdict: Verdict | None  # None: not ours, or the job is gone
    view: DeliveryView | None  # to fire it: what the delivery needs (its spec the job's own)


def still_ours(state: State, fire: dict[str, Any], node_id: str) -> bool:
    """Does the state still give this attempt of the fire to node_id?"""
    return _ours(state, fire, node_id) is not None


class Holding(NamedTuple):
    """What the executor checks just before a call, of an attempt the state gives it."""

    lease_end_ms: int
    # Replicated time is within WITHDRAW_SLACK_MS of the fire's due time: a pause or edit applied
    # from now on counts the fire as started and keeps it (schedb.fsm.occurrences).
    time_reached: bool


def holding(state: State, fire: dict[str, Any], node_id: str) -> Holding | None:
    """The attempt as the state gives it to node_id now (None: it does not)."""
    current = _ours(state, fire, node_id)
    if current is None:
        return None
    return Holding(current["lease_end_ms"], state.now_ms >= current["due_ms"] - WITHDRAW_SLACK_MS)


def _ours(state: State, fire: dict[str, Any], node_id: str) -> Fire | None:
    current = state.book.get(fire["fire_id"])
    ours = current is not None and current["node"] == node_id and current["attempt"] == fire["attempt"]
    return current if ours else None


def decide_fire(state: State, fire: dict[str, Any], node_id: str) -> FireDecision:
    """Fire or skip the attempt now (schedb.policies, with the replicated misfire grace; now
    read under the lock: a long wait for it must not make the verdict miss a fire that fell
    due meanwhile) and, for a fire, its delivery view, in one read. The view's spec is the
    state's own: apply replaces a spec, never changes one (fsm.queries.JOB_COPY_DEPTH), and
    the delivery builds its own webhook from it (resolve_secrets)."""
    now_ms = wall_ms()
    current = _ours(state, fire, node_id)
    if current is None:
        return FireDecision(False, None, None)
    # The attempts reported as the state has them now: the executor's copy of the fire is as
    # old as the last change that moved it (a report on an older attempt moves nothing).
    decision = verdict(state, {**fire, "reported": current["reported"]}, now_ms, state.limits.misfire_grace_ms)
    view = delivery_view(state, fire["job_id"]) if decision is not None and decision.fire else None
    return FireDecision(True, decision, view)


def replaced_fires(state: State, running: list[tuple[Any, dict[str, Any]]], now_ms: int) -> list[tuple[Any, str]]:
    """(key, the newer fire's id) of each running (key, fire) of a `replace` job that a newer
    fire of the job, due by now_ms, replaces."""
    return [(key, newer) for key, fire in running if (newer := newer_fire_due(state, fire, now_ms))]


# -- the dispatcher ------------------------------------------------------------------------


class Silent(NamedTuple):
    """A follower that has not answered the leader for reassign_after_s (Dispatcher._silent)."""

    started_none_after_ms: int  # it cannot have started a fire due later (replicated time)
    gone: bool  # its process is gone, so it will never report what it started before


class PlanInputs(NamedTuple):
    now_ms: int
    lookahead_ms: int
    self_id: str  # this node, the leader
    candidates: list[str]  # the executors that may get fires now
    evacuate: dict[str, Silent | None]  # nodes whose fires move: this node (None) and silent followers
    scan_leases: bool  # look for fires whose lease ended, too
    started_here: Callable[[dict[str, Any]], str]  # this node's executor: started, unstarted or unknown
    # The clock watch: does this live member hold its fires for its clock (measured off)? None: no watch.
    clock_held: Callable[[str], bool] | None
    max_offset_ms: int  # the clock bound
    # The most fires due about now each executor may hold (schedb.admission); one not listed has no limit.
    windows: Mapping[str, int] = MappingProxyType({})
    # The clock watch: how far ahead of this node's a member's clock may have started fires (ms).
    clock_ahead_ms: Callable[[str], float | None] | None = None


class Batch(NamedTuple):
    items: list[Move]  # [job id, scheduled ms, node]: new fires
    reassign: list[Move]
    release: list[Move]
    expired: list[dict[str, Any]]  # the fires whose lease ended that move (to log)
    loads: dict[str, Load]  # each candidate's fires, as this plan found them
    full: frozenset[str]  # the executors this plan gave all the room of their windows


def rendezvous_pick(job_id: str, candidates: list[str]) -> str:
    """The candidate with the highest hash of (candidate, job): stable as members come and go."""
    assert candidates, "rendezvous_pick needs at least one candidate"

    def score(node_id: str) -> bytes:
        return hashlib.blake2b(f"{node_id}\x00{job_id}".encode(), digest_size=8).digest()

    return max(candidates, key=score)


def plan_batch(state: State, plan: PlanInputs) -> Batch:
    """The next AssignFires, at most ASSIGN_BATCH_MAX items in all."""
    now_ms, candidates = plan.now_ms, plan.candidates
    until_ms = now_ms + plan.lookahead_ms
    loads = {node: load_of(state, node, now_ms) for node in candidates}
    # A window bounds the fires an executor holds that are due about now: those overdue are a
    # backlog it works off or lets go (one it cannot call within its lease waits for the lease,
    # for half a minute), and counting them would shrink its room as it falls behind, and so
    # make it fall further behind; a retry waits for its backoff.
    window_room = {node: window - (loads[node].held - loads[node].overdue - loads[node].deferred)
                   for node, window in plan.windows.items() if node in loads}
    items = _new_fires(state, plan, window_room)
    moves = [_move(fire, candidates) for fire in state.book.pending_fires() if fire["due_ms"] <= until_ms]
    release = _evacuate(state, plan, moves)
    moves += _not_due_of_clock_held(state, plan)
    expired: list[dict[str, Any]] = []
    if plan.scan_leases:
        released = {item[0] for item in release}
        expired = _expired_leases(state, plan, ASSIGN_BATCH_MAX - len(items) - len(moves) - len(release))
        moves += [[e["fire_id"], e["attempt"], e["to"], e["executor"]] for e in expired if e["fire_id"] not in released]
    room = max(0, ASSIGN_BATCH_MAX - len(items))
    release = release[:room]
    moves = moves[:room - len(release)]
    full = frozenset(node for node, left in window_room.items() if left <= 0)
    return Batch(items, moves, release, expired, loads, full)


def load_of(state: State, node: str, now_ms: int) -> Load:
    """The fires an executor holds, and how many of them are overdue (schedb.admission)."""
    fires, held = state.book.fires, state.book.by_node.get(node, {})
    overdue_before_ms = now_ms - OVERDUE_AFTER_MS
    overdue = in_a_row = deferred = 0
    for looked, fire_id in enumerate(held):
        if looked >= OVERDUE_SCAN_MAX or in_a_row >= OVERDUE_SCAN_RUN:
            break
        fire = fires[fire_id]
        if fire["due_ms"] <= overdue_before_ms:
            overdue, in_a_row = overdue + 1, 0
        elif fire["attempt"] == fire["attempt_base"] + 1:
            in_a_row += 1
        elif fire["due_ms"] > now_ms:  # a retry in its backoff keeps its early place: apart
            deferred += 1
    return Load(len(held), overdue, deferred)


def _new_fires(state: State, plan: PlanInputs, room: dict[str, int]) -> list[Move]:
    """The jobs' next occurrences to hand out, each to the executor rendezvous hashing picks
    among those with room in their window (schedb.admission; `room` is what they have and
    shrinks as they get fires). With no room anywhere, the jobs due now stay in their slots:
    handed out later, or past the misfire grace caught up by the state machine (recorded
    missed, then the job's misfire policy)."""
    open_ = [node for node in plan.candidates if room.get(node, 1) > 0]
    limit = ASSIGN_BATCH_MAX
    if len(room) == len(plan.candidates):  # every executor limited: no more than their room
        limit = min(limit, sum(max(0, left) for left in room.values()))
    items = _catch_ups(state, plan, open_, room)
    for group in _due_groups(state, plan, room, limit):
        for job_id, scheduled_ms in group:
            if not open_ or len(items) >= ASSIGN_BATCH_MAX or limit <= 0:
                return items
            limit -= 1
            items.append([job_id, scheduled_ms, _take_room(job_id, open_, room)])
    return items


def _catch_ups(state: State, plan: PlanInputs, open_: list[str], room: dict[str, int]) -> list[Move]:
    """Late jobs (an outage, an overload) catch up a bounded number per batch (apply spends a
    bounded amount of catch-up work per command): they must not keep the jobs due now waiting.
    Most catch-ups only record what was missed, and go whatever the room; one that fires (a job
    one occurrence behind, or under run_all) takes room like any fire, and waits for some."""
    items: list[Move] = []
    for job_id, scheduled_ms in state.due_jobs(plan.now_ms - state.limits.misfire_grace_ms - 1, LATE_PER_BATCH):
        if not room or not _catch_up_fires(state, job_id, scheduled_ms, plan.now_ms):
            items.append([job_id, scheduled_ms, rendezvous_pick(job_id, open_ or plan.candidates)])
        elif open_:
            items.append([job_id, scheduled_ms, _take_room(job_id, open_, room)])
    return items


def _due_groups(state: State, plan: PlanInputs, room: dict[str, int], limit: int) -> list[list[tuple[str, int]]]:
    """The jobs due within their grace, in the order they get the room. With no window set:
    the whole lookahead, earliest first. With windows set: the occurrences that can still be
    about on time, then those further behind; in each, the jobs that ran least recently first
    (else the jobs that just fired would win again, and the others would only ever be caught
    up as missed). None ahead of time: a fire due in seconds would hold a place one due now needs."""
    late_before_ms = plan.now_ms - state.limits.misfire_grace_ms
    if not room:
        return [state.due_jobs(plan.now_ms + plan.lookahead_ms, limit, from_ms=late_before_ms)]
    on_time_ms = plan.now_ms - ON_TIME_MS
    groups = [state.due_jobs(plan.now_ms + DUE_NOW_MS, ASSIGN_BATCH_MAX, from_ms=on_time_ms),
              state.due_jobs(on_time_ms - 1, ASSIGN_BATCH_MAX, from_ms=late_before_ms)]
    for group in groups:
        group.sort(key=lambda job: (state.jobs[job[0]].get("ran_ms", -1), job[1]))
    return groups


def _catch_up_fires(state: State, job_id: str, scheduled_ms: int, now_ms: int) -> bool:
    """Will the catch-up of this late occurrence fire it? As apply decides (fsm.assign via
    occurrences.apply_misfire_policy): when the job's misfire policy resumes at it."""
    spec = state.jobs[job_id]["spec"]
    schedule = parse_schedule(spec["schedule"], spec["timezone"])
    return misfire.resume_at(schedule, scheduled_ms, now_ms, spec["misfire"],
                             state.limits.catch_up_window_ms) == scheduled_ms


def _take_room(job_id: str, open_: list[str], room: dict[str, int]) -> str:
    """The executor with room that rendezvous hashing picks for the job; its room shrinks."""
    node = rendezvous_pick(job_id, open_)
    if node in room:
        room[node] -= 1
        if room[node] <= 0:
            open_.remove(node)
    return node


def _move(fire: dict[str, Any], candidates: list[str]) -> Move:
    """A fire to move, naming its holder as seen now: applied after it changed hands, it is stale."""
    return [fire["fire_id"], fire["attempt"], rendezvous_pick(fire["job_id"], candidates), fire["node"]]


def _evacuate(state: State, plan: PlanInputs, moves: list[Move]) -> list[Move]:
    """The fires of the nodes to evacuate: those to release (returned) and to move (to moves)."""
    release: list[Move] = []
    for node_id, silent in sorted(plan.evacuate.items()):
        for fire in state.book.of_node(node_id):
            move = _move(fire, plan.candidates)
            if silent is not None:  # a silent follower's (see Dispatcher._silent)
                if fire["due_ms"] > silent.started_none_after_ms:
                    release.append(move)
                elif silent.gone:
                    moves.append(move)  # it may have been running when the process died: a new attempt
                continue
            started = plan.started_here(fire)
            if started == "started":
                continue  # started before this node led: it finishes and reports it
            # Never started here: the same attempt goes on (an at-most-once fire is not lost).
            (release if started == "unstarted" else moves).append(move)
    return release


def _not_due_of_clock_held(state: State, plan: PlanInputs) -> list[Move]:
    """A live follower that holds its fires for its clock (or is measured off) has started
    none due later than now plus the clock bound, or plus how far ahead its clock may be when
    that is more: those move. It may not know yet that it is off (a step of this leader's clock
    shows in its verdict only after its next probe), and it fires by its own clock. Earlier ones
    may be running there; they are left to their outcome or their lease, so that nothing is
    called twice (simulator seed 447000066)."""
    if plan.clock_held is None:
        return []
    moves = []
    for node_id in sorted(state.book.by_node):
        if node_id in plan.evacuate or node_id in plan.candidates or node_id == plan.self_id:
            continue
        if not plan.clock_held(node_id):
            continue  # not measured: a new or silent node, whose fires the other rules cover
        ahead_ms = plan.clock_ahead_ms(node_id) if plan.clock_ahead_ms is not None else None
        not_before_ms = plan.now_ms + max(plan.max_offset_ms, math.ceil(ahead_ms or 0))
        moves += [_move(fire, plan.candidates) for fire in state.book.of_node(node_id)
                  if fire["due_ms"] > not_before_ms]
    return moves


def _expired_leases(state: State, plan: PlanInputs, limit: int) -> list[dict[str, Any]]:
    """Fires whose outcome should have committed long ago (a silent follower's included): a new
    attempt, on another executor if there is one, else on the same (its executor starts no call
    that could outlast the lease, so the old attempt is over or was never made: an orphaned or
    too-late one would otherwise wait for ever). Not this node's own: it finishes what it started.
    At most `limit`, the room left in the batch (an overload may leave thousands): the rest wait
    for the next batches."""
    out: list[dict[str, Any]] = []
    for fire in state.book.fires.values():
        if len(out) >= limit:
            break
        if fire["node"] and fire["node"] != plan.self_id and fire["lease_end_ms"] < plan.now_ms:
            others = [c for c in plan.candidates if c != fire["node"]] or plan.candidates
            out.append({"job_id": fire["job_id"], "fire_id": fire["fire_id"], "attempt": fire["attempt"],
                        "executor": fire["node"], "to": rendezvous_pick(fire["job_id"], others)})
    return out
