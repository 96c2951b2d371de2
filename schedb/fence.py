"""The executor's fence: may this follower trust its view of the state now?

A follower starts a fire only while it has heard from a leader within `fence_s`, so a
follower cut off from the cluster stops firing on its own before anyone could hand its
fires to another node. Hearing again after a gap is not enough either: the first message
may have waited in a socket through a freeze (SIGSTOP), and what it commits may move this
node's fires. So after a gap the fence also waits for the log to be applied up to the
commit index that message carried and, after a gap longer than the fence itself, for the
state to carry leader time stamped after this node heard the leader again.

Pure bookkeeping: the Raft transport calls `heard` for each append_entries of the current
term (schedb.raft_node, on pysyncobj's tick thread; the simulator's Raft model), and the
executor asks `open` (schedb.raft.Replica.leader_heard_within). Times come in as arguments.
`leader_heard_at` is written on one thread and reset on the other (`open` while leading): a
lost race only closes the fence until the next heartbeat.
"""

from __future__ import annotations

# Silence from the leader longer than this (ten heartbeats) is a gap after which the fence
# waits for the log to be applied (Fence.until_applied).
LEADER_GAP_S = 1.0


class Fence:
    def __init__(self, long_gap_s: float) -> None:
        """long_gap_s: the fence (scheduler.fence_s); a gap that long may have let the leader
        move this node's fires."""
        self.leader_heard_at = 0.0  # monotonic
        self.until_applied = 0  # the commit index learnt after the last gap
        self.fresh_time_needed_ms = 0  # this node's wall clock when it heard a leader after a long gap
        self._long_gap_s = long_gap_s

    def heard(self, now: float, now_ms: int, commit_index: int) -> None:
        """An append_entries of the current term arrived (before its entries are handled);
        now (monotonic) and now_ms (wall) read at the same moment."""
        gap_s = now - self.leader_heard_at
        if gap_s > LEADER_GAP_S:
            # Heard again after a gap (a freeze, a partition, a start): this message's entries
            # are not applied yet, and what it commits may move this node's fires. Set before
            # leader_heard_at, which `open` reads first (they are read from another thread).
            self.until_applied = max(self.until_applied, commit_index)
        if gap_s > self._long_gap_s:
            # The message may have waited in the socket through a freeze, its commit index from
            # before the moves: only leader time stamped after now proves the view is fresh.
            self.fresh_time_needed_ms = max(self.fresh_time_needed_ms, now_ms)
        self.leader_heard_at = now

    def leading(self) -> None:
        """This node leads: it hears no leader meanwhile, so when it stops leading its view is
        as old as its leadership (what it proposed may have committed without its knowing, e.g.
        fires it released to a follower): it must hear the next leader, after a gap, first."""
        self.leader_heard_at = 0.0

    def open(self, now: float, within_s: float, last_applied: int, state_now_ms: int, max_offset_ms: int,
             leading: bool) -> bool:
        """A leader's fence is open. A follower's: it heard a leader within `within_s`, and the
        applied state (last_applied, its replicated time state_now_ms) is fresh after the last
        gap, allowing for the leader's clock being up to max_offset_ms behind this node's."""
        if leading:
            self.leading()
            return True
        if now - self.leader_heard_at >= within_s:
            return False
        if last_applied < self.until_applied:
            return False
        needed_ms = self.fresh_time_needed_ms
        if needed_ms and state_now_ms < needed_ms + max_offset_ms:
            return False
        if needed_ms and self.fresh_time_needed_ms == needed_ms:  # met: a clock corrected later must not keep it up
            self.fresh_time_needed_ms = 0
        return True
