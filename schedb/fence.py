"""The executor's fence: may this follower trust its view of the state now?

A follower starts a fire only while it has heard from a leader within `fence_s`, so a
follower cut off from the cluster stops firing on its own before anyone could hand its
fires to another node. Hearing again after a gap is not enough either: the first message
may have waited in a socket through a freeze (SIGSTOP), and what it commits may move this
node's fires. So after a gap the fence also waits for the log to be applied up to the
commit index that message carried and, after a gap longer than the fence itself, for the
state to carry leader time stamped after this node heard the leader again.

Heard means a round trip, not a message: each reply to the leader carries the follower's
own clock (SENT), and the leader echoes the newest one it received in what it sends that
follower (ECHO, `Echoes`). The fence counts from that echo, so a follower whose replies stop
reaching the leader (a one-way partition, a slow link) closes its fence no later than
fence_s after its last reply the leader got, whatever it still hears: the leader, which knows
when that reply arrived (its last ack), can tell which fires the follower cannot have started
(schedb.dispatcher.Dispatcher._silent).

Pure bookkeeping: the Raft transport calls `heard` for each append_entries of the current
term, stamps and reads the round-trip fields (schedb.raft_node on pysyncobj's tick thread;
the simulator's Raft model), and the executor asks `open`
(schedb.raft.Replica.leader_heard_within). Times come in as arguments.
`leader_heard_at` is written on one thread and reset on the other (`open` while leading): a
lost race only closes the fence until the next heartbeat.
"""

from __future__ import annotations

from typing import Any

# Silence from the leader longer than this (ten heartbeats) is a gap after which the fence
# waits for the log to be applied (Fence.until_applied).
LEADER_GAP_S = 1.0
SENT = "schedb_sent"  # in a follower's reply (next_node_idx): its monotonic clock when it sent it
ECHO = "schedb_echo"  # in a leader's append_entries: the SENT of that follower's newest reply it received


class Fence:
    def __init__(self, long_gap_s: float) -> None:
        """long_gap_s: the fence (scheduler.fence_s); a gap that long may have let the leader
        move this node's fires."""
        self.leader_heard_at = 0.0  # monotonic: when this node sent a reply the leader got (ECHO)
        self._message_at = 0.0  # monotonic: when a leader's message last arrived (gaps)
        self.until_applied = 0  # the commit index learnt after the last gap
        self.fresh_time_needed_ms = 0  # this node's wall clock when it heard a leader after a long gap
        self._long_gap_s = long_gap_s

    def heard(self, now: float, now_ms: int, commit_index: int, echo: object) -> None:
        """An append_entries of the current term arrived (before its entries are handled);
        now (monotonic) and now_ms (wall) read at the same moment; echo: the message's ECHO."""
        fresh_echo = isinstance(echo, float) and self.leader_heard_at < echo <= now
        # A gap in messages (a freeze, a partition, a start), or in round trips (its answers were
        # lost while it went on hearing the leader): either way the leader may have moved this
        # node's fires meanwhile.
        gap_s = max(now - self._message_at, now - self.leader_heard_at if fresh_echo else 0.0)
        if gap_s > LEADER_GAP_S:
            # This message's entries are not applied yet, and what it commits may move this
            # node's fires. Set before leader_heard_at, which `open` reads first (they are read
            # from another thread).
            self.until_applied = max(self.until_applied, commit_index)
        if gap_s > self._long_gap_s:
            # The message may have waited in the socket through a freeze, its commit index from
            # before the moves: only leader time stamped after now proves the view is fresh.
            self.fresh_time_needed_ms = max(self.fresh_time_needed_ms, now_ms)
        self._message_at = now
        if fresh_echo:
            self.leader_heard_at = echo  # type: ignore[assignment]  # a float: fresh_echo says so

    def leading(self) -> None:
        """This node leads: it hears no leader meanwhile, so when it stops leading its view is
        as old as its leadership (what it proposed may have committed without its knowing, e.g.
        fires it released to a follower): it must hear the next leader, after a gap, first."""
        self.leader_heard_at = 0.0
        self._message_at = 0.0

    def open(self, now: float, within_s: float, last_applied: int, state_now_ms: int, max_offset_ms: int,
             leading: bool) -> bool:
        """A leader's fence is open. A follower's: a reply of its that reached a leader was sent
        within `within_s` (its echo), and the applied state (last_applied, its replicated time
        state_now_ms) is fresh after the last gap, allowing for the leader's clock being up to
        max_offset_ms behind this node's."""
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


class Echoes:
    """The round trip's other half: SENT stamped on a follower's replies, and on a leader's
    append_entries to a follower the SENT of that follower's newest reply it received."""

    def __init__(self) -> None:
        self._sent: dict[str, float] = {}  # follower → SENT of its newest reply that arrived here

    def stamp(self, to: str, message: dict[str, Any], now: float) -> None:
        """An outgoing Raft message to `to` (a dict of pysyncobj's, or of the simulator's model)."""
        kind = message.get("type")
        if kind == "next_node_idx":
            message[SENT] = now
        elif kind == "append_entries" and to in self._sent:
            message[ECHO] = self._sent[to]

    def replied(self, sender: str, message: dict[str, Any]) -> None:
        """A follower's reply arrived: its stamp is echoed from now on. The latest, not the
        largest: a follower whose host rebooted starts its monotonic clock again near 0 (its
        connection keeps its replies in order; a reordered older one only closes its fence
        sooner)."""
        sent = message.get(SENT)
        if isinstance(sent, float):
            self._sent[sender] = sent

    def keep_only(self, members: set[str]) -> None:
        """Forget departed members (a new dict: another thread may be reading this one)."""
        if not members.issuperset(self._sent):
            self._sent = {addr: sent for addr, sent in self._sent.items() if addr in members}
