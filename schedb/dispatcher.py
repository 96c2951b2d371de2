"""The leader's dispatcher: hands fires to executors, ahead of time.

Every `dispatch_interval_s` the leader plans one AssignFires command:
- the next occurrence of every job due within the lookahead window, to an
  executor picked by rendezvous hashing of the job id over the live followers;
- pending fires (triggered, replayed) due within the window;
- fires to move: those of an executor that has not acknowledged the log for
  `reassign_after_s` and that fell due after its fence closed (a cut-off
  follower stops firing on its own after `fence_s`; what it may have delivered
  before waits for its outcome, or for its lease), those this node holds from
  its time as a follower (a leader executes nothing while it has followers),
  and those whose lease ended without an outcome.

Fires reach executors only through the committed log, so a stale leader
cannot hand out anything: its proposal never commits, and an item that no
longer matches the state (already assigned, job changed) is a no-op on apply.

Why ahead of time: when the leader dies, the next `lookahead_s` of fires
already sit on the followers, which keep firing on time through the election.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import structlog

from schedb.clock import monotonic, wall_ms
from schedb.clockwatch import ClockWatch
from schedb.commands import AssignFires
from schedb.config import Config
from schedb.fsm.core import State
from schedb.metrics import NodeMetrics
from schedb.raft import Replica, SubmitError

log = structlog.get_logger("schedb.dispatcher")
# A follower whose log lags further behind than this is not given new fires.
FOLLOWER_LAG_MAX = 1_000
ASSIGN_BATCH_MAX = 2_000
LEASE_SCAN_INTERVAL_S = 1.0
LATE_PER_BATCH = 100  # jobs behind by more than the misfire grace, per AssignFires
HANDOVER_INTERVAL_S = 5.0  # between two attempts of a leader whose clock is disputed to hand over
# Replicated time trails the leader's clock by at most this much on an idle cluster; less than
# replicated_time.PROPOSER_LEAD_MS_MAX, so a command proposed through a follower with a good clock gets its own time.
CLOCK_TICK_S = 0.3
# A silent follower heard the leader last at most a heartbeat and a round trip after its last
# answer: beyond the heartbeat, this covers the round trip, an early timer and rounding.
SILENT_SLACK_MS = 100


class Silent(NamedTuple):
    """A follower that has not answered the leader for reassign_after_s (Dispatcher._silent)."""

    started_none_after_ms: int  # it cannot have started a fire due later (replicated time)
    gone: bool  # its process is gone, so it will never report what it started before


def rendezvous_pick(job_id: str, candidates: list[str]) -> str:
    """The candidate with the highest hash of (candidate, job): stable as members come and go."""
    assert candidates, "rendezvous_pick needs at least one candidate"

    def score(node_id: str) -> bytes:
        return hashlib.blake2b(f"{node_id}\x00{job_id}".encode(), digest_size=8).digest()

    return max(candidates, key=score)


class Dispatcher:
    def __init__(self, config: Config, replica: Replica, started_here: Callable[[dict[str, Any]], str],
                 metrics: NodeMetrics, clock: ClockWatch | None = None) -> None:
        """started_here(fire): whether this node's executor started it: started, unstarted or unknown."""
        self._config = config
        self._metrics = metrics
        self._replica = replica
        self._started_here = started_here
        self._clock = clock
        self._next_handover = 0.0
        self._lookahead_ms = int(config.scheduler.lookahead_s * 1000)
        self._leader_since = 0.0
        self._next_lease_scan = 0.0
        self._next_tick = 0.0

    async def run(self) -> None:
        interval_s = self._config.scheduler.dispatch_interval_s
        while True:
            await asyncio.sleep(interval_s)
            leader = self._replica.is_leader()
            if leader != bool(self._leader_since):
                log.info("leadership_changed", leader=leader)
                self._metrics.leadership_changes.inc()
                self._leader_since = monotonic() if leader else 0.0
            if not leader or not self._clock_agreed():
                continue
            try:
                # Keep going while a full batch came back: catch up quickly after a failover.
                while await self.dispatch_once() >= ASSIGN_BATCH_MAX:
                    pass
            except SubmitError as exc:
                log.warning("assign_not_committed", reason=exc.reason)

    def _clock_agreed(self) -> bool:
        """This leader's clock becomes replicated time: it assigns nothing (and ticks nothing) unless
        a majority of the cluster agrees with it, and hands its leadership on meanwhile."""
        if self._clock is None:
            return True
        reason = self._clock.hold_reason()
        # Hand over only when most members are measured off: unmeasured yet (a start) just waits.
        disputed = reason == "clock_offset" and not self._clock.may_lead()
        if disputed and self._replica.has_peers() and monotonic() >= self._next_handover:
            self._next_handover = monotonic() + HANDOVER_INTERVAL_S
            log.warning("leader_clock_disputed", reason=reason, offsets=self._clock.offsets())
            self._replica.transfer_leadership()
        return not reason

    def executors(self, nodes: dict[str, dict[str, Any]]) -> list[str]:
        """Node ids that may execute fires now: live followers that are not shutting down and
        whose clock is known to agree with this node's, or this node when it has no peers."""
        config = self._config
        if not self._replica.has_peers():
            return [config.node.id]
        live = set(self._replica.live_followers(config.scheduler.follower_alive_s, FOLLOWER_LAG_MAX))
        return sorted(node_id for node_id, node in nodes.items()
                      if node["raft_addr"] in live and node_id != config.node.id and not node.get("draining")
                      and (self._clock is None or self._clock.may_execute(node_id)))

    async def dispatch_once(self) -> int:
        """Plan and propose one batch; returns how many fires were assigned or moved."""
        now_ms = wall_ms()
        nodes = self._replica.read(lambda s: dict(s.nodes))
        candidates = self.executors(nodes)
        items: list[list[Any]] = []
        reassign: list[list[Any]] = []
        release: list[list[Any]] = []
        if candidates:
            evacuate = self._nodes_to_evacuate(nodes, candidates)
            scan_leases = monotonic() >= self._next_lease_scan
            if scan_leases:
                self._next_lease_scan = monotonic() + LEASE_SCAN_INTERVAL_S
            items, reassign, release = self._replica.read(
                lambda s: self._plan(s, now_ms, candidates, evacuate, scan_leases))
        if not items and not reassign and not release and monotonic() < self._next_tick:
            return 0
        # Nothing to assign still ticks the replicated clock (only the leader's assignments move it).
        self._next_tick = monotonic() + CLOCK_TICK_S
        result = await self._replica.submit(AssignFires(now_ms, items, reassign, release,
                                                        leader_id=self._config.node.id))
        if result.get("reassigned"):
            log.info("fires_moved", moved=result["reassigned"])
        return int(result.get("assigned", 0)) + int(result.get("reassigned", 0))

    def _nodes_to_evacuate(self, nodes: dict[str, dict[str, Any]], candidates: list[str]) -> dict[str, Silent | None]:
        """This node (a leader hands its fires on: None) and followers silent for reassign_after_s."""
        if not self._replica.has_peers():
            return {}
        out: dict[str, Silent | None] = {self._config.node.id: None}
        now = monotonic()
        for node_id, node in nodes.items():
            if node_id in candidates or node_id == self._config.node.id:
                continue
            last_ack = self._replica.last_ack(node["raft_addr"])
            if now - max(last_ack, self._leader_since) > self._config.scheduler.reassign_after_s:
                out[node_id] = self._silent(node_id, last_ack, now)
        return out

    def _silent(self, node_id: str, last_ack: float, now: float) -> Silent:
        """What a silent follower may have started (monotonic times).

        It heard a leader last no later than a heartbeat and a round trip after its last answer
        here. If it never answered this leader, it may have gone on hearing the deposed one
        until that one stepped down (raft.leader_fallback_s after this one's election). It
        starts a fire only while it has heard a leader within fence_s, at the fire's due time
        by its own clock: so nothing due after its fence closed, in replicated time. A fire due
        earlier it may have delivered. Cut off, it reports that when it is back: the fire waits
        for that, or for its lease (moving it now would call it twice). Gone (its port refused
        a connection since it last answered: the process died), it will never report: the fire
        moves now as a new attempt (an at-most-once one is recorded unknown)."""
        scheduler, raft = self._config.scheduler, self._config.raft
        heard = last_ack if last_ack >= self._leader_since else self._leader_since + raft.leader_fallback_s
        ahead_ms = self._clock.ahead_at_most_ms(node_id) if self._clock is not None else None
        if ahead_ms is None:
            ahead_ms = self._config.clock.max_offset_ms
        fence_closed_ms = wall_ms() - round((now - heard) * 1000) + int(
            (scheduler.fence_s + raft.heartbeat_s) * 1000 + SILENT_SLACK_MS + max(0.0, ahead_ms))
        refused = self._clock.refused_at(node_id) if self._clock is not None else None
        return Silent(fence_closed_ms, gone=refused is not None and refused > last_ack)

    def _plan(self, state: State, now_ms: int, candidates: list[str], evacuate: dict[str, Silent | None],
              scan_leases: bool) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]]]:
        until_ms = now_ms + self._lookahead_ms
        # Late jobs (an outage) catch up a bounded number per batch (apply spends a bounded
        # amount of catch-up work per command): they must not keep the jobs due now waiting.
        late_before_ms = now_ms - state.limits.misfire_grace_ms
        due = state.due_jobs(late_before_ms - 1, LATE_PER_BATCH)
        due += state.due_jobs(until_ms, ASSIGN_BATCH_MAX - len(due), from_ms=late_before_ms)
        items = [[job_id, scheduled_ms, rendezvous_pick(job_id, candidates)] for job_id, scheduled_ms in due]
        moves: list[list[Any]] = []
        for fire in state.book.pending_fires():
            if fire["due_ms"] <= until_ms:
                moves.append([fire["fire_id"], fire["attempt"], rendezvous_pick(fire["job_id"], candidates)])
        release: list[list[Any]] = []
        for node_id, silent in sorted(evacuate.items()):
            for fire in state.book.of_node(node_id):
                move = [fire["fire_id"], fire["attempt"], rendezvous_pick(fire["job_id"], candidates)]
                if silent is not None:  # a silent follower's (see _silent)
                    if fire["due_ms"] > silent.started_none_after_ms:
                        release.append([*move, node_id])
                    elif silent.gone:
                        moves.append(move)  # it may have been running when the process died: a new attempt
                    continue
                started = self._started_here(fire)
                if started == "started":
                    continue  # started before this node led: it finishes and reports it
                # Never started here: the same attempt goes on (an at-most-once fire is not lost).
                (release if started == "unstarted" else moves).append(move)
        moves += self._not_due_of_clock_held(state, now_ms, candidates, evacuate)
        if scan_leases:
            released = {item[0] for item in release}
            moves += [m for m in self._expired_leases(state, now_ms, candidates) if m[0] not in released]
        room = max(0, ASSIGN_BATCH_MAX - len(items))
        release = release[:room]
        return items, moves[:room - len(release)], release

    def _not_due_of_clock_held(self, state: State, now_ms: int, candidates: list[str],
                               evacuate: dict[str, Silent | None]) -> list[list[Any]]:
        """A live follower that holds its fires for its clock (or is measured off) has started
        none due later than now plus the clock bound: those move. Earlier ones may be running
        there; they are left to their outcome or their lease, so that nothing is called twice."""
        if self._clock is None:
            return []
        not_before_ms = now_ms + self._clock.max_offset_ms
        moves = []
        for node_id in sorted(state.book.by_node):
            if node_id in evacuate or node_id in candidates or node_id == self._config.node.id:
                continue
            if self._clock.may_execute(node_id) or self._clock.offset_ms(node_id) is None:
                continue  # not measured: a new or silent node, whose fires the other rules cover
            moves += [[fire["fire_id"], fire["attempt"], rendezvous_pick(fire["job_id"], candidates)]
                      for fire in state.book.of_node(node_id) if fire["due_ms"] > not_before_ms]
        return moves

    def _expired_leases(self, state: State, now_ms: int, candidates: list[str]) -> list[list[Any]]:
        """Fires whose outcome should have committed long ago (a silent follower's included):
        try another executor. Not this node's own: it finishes what it started."""
        moves = []
        for fire in state.book.fires.values():
            if fire["node"] and fire["node"] != self._config.node.id and fire["lease_end_ms"] < now_ms:
                others = [c for c in candidates if c != fire["node"]] or candidates
                target = rendezvous_pick(fire["job_id"], others)
                if target != fire["node"]:
                    moves.append([fire["fire_id"], fire["attempt"], target])
                    log.warning("lease_expired", job_id=fire["job_id"], fire_id=fire["fire_id"],
                                attempt=fire["attempt"], executor=fire["node"], to=target)
        return moves
