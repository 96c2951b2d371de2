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
from collections.abc import Callable
from typing import Any

import structlog

from schedb.admission import Admission, WindowChange
from schedb.clock import monotonic, wall_ms
from schedb.clockwatch import ClockWatch
from schedb.commands import AssignFires
from schedb.config import Config
from schedb.fire_queries import ASSIGN_BATCH_MAX, PlanInputs, Silent, plan_batch
from schedb.fsm import queries
from schedb.metrics import NodeMetrics
from schedb.raft import Replica, SubmitError

log = structlog.get_logger("schedb.dispatcher")
# A follower whose log lags further behind than this is not given new fires.
FOLLOWER_LAG_MAX = 1_000
LEASE_SCAN_INTERVAL_S = 1.0
EXPIRED_LOGGED_MAX = 20  # lease_expired lines per batch; beyond, one leases_expired line counts them
HANDOVER_INTERVAL_S = 5.0  # between two attempts of a leader whose clock is disputed to hand over
# Replicated time trails the leader's clock by at most this much on an idle cluster; less than
# replicated_time.PROPOSER_LEAD_MS_MAX, so a command proposed through a follower with a good clock gets its own time.
CLOCK_TICK_S = 0.3
# A follower that never answered this leader may have heard the deposed one up to a heartbeat
# and a round trip after that one stepped down: beyond the heartbeat, the round trip and rounding.
SILENT_SLACK_MS = 100


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
        self._admission = self._fresh_admission()
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
                self._new_admission()
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
        nodes = self._replica.read(queries.nodes)
        candidates = self.executors(nodes)
        items: list[list[Any]] = []
        reassign: list[list[Any]] = []
        release: list[list[Any]] = []
        if candidates:
            evacuate = self._nodes_to_evacuate(nodes, candidates)
            scan_leases = monotonic() >= self._next_lease_scan
            if scan_leases:
                self._next_lease_scan = monotonic() + LEASE_SCAN_INTERVAL_S
            batch = self._replica.read(plan_batch, self.plan_inputs(now_ms, candidates, evacuate, scan_leases))
            for expired in batch.expired[:EXPIRED_LOGGED_MAX]:
                log.warning("lease_expired", **expired)
            if len(batch.expired) > EXPIRED_LOGGED_MAX:  # an overload: one line for the rest
                log.warning("leases_expired", count=len(batch.expired),
                            not_logged=len(batch.expired) - EXPIRED_LOGGED_MAX)
            items, reassign, release = batch.items, batch.reassign, batch.release
            for change in self._admission.observe(batch.loads, batch.full, monotonic()):
                self._window_changed(change)
        if not items and not reassign and not release and monotonic() < self._next_tick:
            return 0
        # Nothing to assign still ticks the replicated clock (only the leader's assignments move it).
        self._next_tick = monotonic() + CLOCK_TICK_S
        result = await self._replica.submit(AssignFires(now_ms, items, reassign, release,
                                                        leader_id=self._config.node.id))
        self._admission.handed(result.get("given", {}))  # what the committed batch created and moved
        if result.get("reassigned"):
            log.info("fires_moved", moved=result["reassigned"])
        return int(result.get("assigned", 0)) + int(result.get("reassigned", 0))

    def _new_admission(self) -> None:
        """Each term of leadership measures the executors afresh (what an earlier one measured is old)."""
        for executor in self._admission.windows():
            self._metrics.set_admission_window(executor, None)
        self._admission = self._fresh_admission()

    def _fresh_admission(self) -> Admission:
        return Admission(self._config.scheduler.lookahead_s, self._config.executor.max_inflight)

    def _window_changed(self, change: WindowChange) -> None:
        self._metrics.set_admission_window(change.executor, change.window)
        log.info("admission_window", executor=change.executor, window=change.window, overdue=change.overdue,
                 finished_per_s=change.finished_per_s)

    def _nodes_to_evacuate(self, nodes: dict[str, dict[str, Any]], candidates: list[str]) -> dict[str, Silent | None]:
        """This node (a leader hands its fires on: None) and followers silent for reassign_after_s."""
        if not self._replica.has_peers():
            return {}
        out: dict[str, Silent | None] = {self._config.node.id: None}
        now, now_ms = monotonic(), wall_ms()  # the same moment on both clocks
        for node_id, node in nodes.items():
            if node_id in candidates or node_id == self._config.node.id:
                continue
            last_ack = self._replica.last_ack(node["raft_addr"])
            if now - max(last_ack, self._leader_since) > self._config.scheduler.reassign_after_s:
                out[node_id] = self._silent(node_id, last_ack, now, now_ms)
        return out

    def _silent(self, node_id: str, last_ack: float, now: float, now_ms: int) -> Silent:
        """What a silent follower may have started (last_ack and now monotonic; now_ms the same
        moment by the wall clock).

        It starts a fire only while its fence is open, at the fire's due time by its own clock,
        and its fence counts from a reply of its that reached a leader (schedb.fence): so from
        its last answer here at the latest, whatever it may still hear from this node (a one-way
        partition, a slow link). If it never answered this leader, it may have gone on with the
        deposed one until that one stepped down (raft.leader_fallback_s after this one's
        election, and a heartbeat and a round trip). So nothing due after its fence closed, in
        replicated time. A fire due earlier it may have delivered. Cut off, it reports that when
        it is back: the fire waits for that, or for its lease (moving it now would call it
        twice). Gone (its port refused a connection since it last answered: the process died),
        it will never report: the fire moves now as a new attempt (an at-most-once one is
        recorded unknown)."""
        scheduler, raft = self._config.scheduler, self._config.raft
        if last_ack >= self._leader_since:
            heard, slack_ms = last_ack, 0
        else:
            heard = self._leader_since + raft.leader_fallback_s
            slack_ms = int(raft.heartbeat_s * 1000) + SILENT_SLACK_MS
        ahead_ms = self._clock.ahead_at_most_ms(node_id) if self._clock is not None else None
        if ahead_ms is None:
            ahead_ms = self._config.clock.max_offset_ms
        fence_closed_ms = now_ms - round((now - heard) * 1000) + int(scheduler.fence_s * 1000) + slack_ms + int(
            max(0.0, ahead_ms))
        refused = self._clock.refused_at(node_id) if self._clock is not None else None
        return Silent(fence_closed_ms, gone=refused is not None and refused > last_ack)

    def plan_inputs(self, now_ms: int, candidates: list[str], evacuate: dict[str, Silent | None],
                    scan_leases: bool) -> PlanInputs:
        """What the plan of a batch (schedb.fire_queries.plan_batch) needs besides the state."""
        clock = self._clock
        clock_held = None if clock is None else clock.holds_fires
        return PlanInputs(now_ms, self._lookahead_ms, self._config.node.id, candidates, evacuate, scan_leases,
                          self._started_here, clock_held, clock.max_offset_ms if clock is not None else 0,
                          self._admission.windows(), None if clock is None else self._clock_ahead_ms)

    def _clock_ahead_ms(self, node_id: str) -> float | None:
        """How far ahead of this node's a member's clock may have started fires: None (the clock
        bound only) when it says it holds them itself; else its samples' bound, since it may not
        know yet that it is off (a step of this leader's clock shows there at its next probe)."""
        assert self._clock is not None
        return None if self._clock.reports_holding(node_id) else self._clock.ahead_at_most_ms(node_id)
