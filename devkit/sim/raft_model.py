"""A message-level Raft node with pysyncobj 0.3.17's observable semantics, for the simulator:
each simulated node runs this in place of pysyncobj. It is not under test; it is kept simple.

Modelled as pysyncobj does it: a random election timeout per deadline, reset by the current
leader's append_entries and by granting a vote; one vote per term (`voted_for` is durable) and
the log up-to-date check; a no-op entry at the start of each leader's term; append_entries every
heartbeat, and at once on a proposal or after the leader applies; a follower behind the leader's
snapshot gets it whole; leader fallback (a leader without answers from a majority within
leader_fallback_s turns follower, and as the election deadline it left behind while leading has
long passed, it stands again at once); `isReady`; `hasQuorum`; TimeoutNow transfer; proposals
(devkit.sim.raft_commands: the command queue and its callbacks). The leader's bookkeeping of
its followers is devkit.sim.raft_leader, the durable state and log indexing devkit.sim.raft_log,
what the engine provides and sets devkit.sim.raft_types.

Left out or approximated: membership changes (the members are fixed); batching, TCP framing and
chunked snapshot transfer (one message carries every entry from next_index, or the whole
snapshot); TCP connections, approximated by `host.process_alive` (a partition keeps a peer
"connected", a dead process does not); compaction by entry count only (no compaction_min_s) and
synchronous (pysyncobj forks); code versions. Where pysyncobj leans on TCP's in-order delivery
the model does not, as the simulated network reorders: replies carry the term, stale snapshots
are ignored, only a conflicting entry truncates the log, a follower commits only what the
message vouched for. A snapshot travels as an install_snapshot message (pysyncobj: an
append_entries with a `serialized` field); `on_append_entries` sees both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devkit.sim.raft_commands import Callback, Fail, Proposals
from devkit.sim.raft_leader import Followers
from devkit.sim.raft_log import NO_OP, Disk, Entry, RaftLog, Snapshot
from devkit.sim.raft_types import Handle, Host, Machine, RaftTiming, Role

# The loop runs a timer up to its clock resolution early (devkit.sim.loop): a deadline closer
# than this counts as reached, or re-arming for the last sliver would loop at one instant.
TIMER_SLACK_S = 1e-6

__all__ = ["Disk", "Fail", "Handle", "Host", "Machine", "RaftNodeModel", "RaftTiming", "Role"]


class RaftNodeModel:
    """One node's Raft, on its host's loop. The engine delivers messages (`receive`), proposes,
    and reads the properties; it builds a new model on the same Disk after a crash (`stop`).
    `on_applied` runs once per batch of entries applied (no-ops count), `on_snapshot_loaded`
    whenever a snapshot replaced the machine's state (at a restart, or from the leader)."""

    def __init__(self, host: Host, members: list[str], timing: RaftTiming, disk: Disk, machine: Machine,
                 on_applied: Callable[[], None], on_snapshot_loaded: Callable[[], None]) -> None:
        self.host = host
        self.members = sorted(members)
        self._peers = [m for m in self.members if m != host.node_id]
        self.timing = timing
        self.disk = disk
        self.machine = machine
        self._on_applied = on_applied
        self._on_snapshot_loaded = on_snapshot_loaded
        self.may_lead = True  # set by the engine (schedb's clock watch)
        self.on_append_entries: Callable[[dict[str, Any]], None] | None = None
        self.on_leading: Callable[[], None] | None = None  # called when it becomes leader (schedb's fence)
        self.follower_acks: dict[str, tuple[float, int]] = {}  # peer -> (when it answered, highest match)
        self._log = RaftLog(disk)
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._commit = max(min(disk.commit_index, self._log.last_index), self._log.base_index)
        self._last_applied = 0  # the journal replay (_start) brings it up
        self._leader_commit: int | None = None  # the last commit index a leader told (its own, leading)
        self._ready = False
        self._stopped = False
        self._started = False
        self._deadline = 0.0  # of the election timeout
        self._votes: set[str] = set()
        self._followers: Followers | None = None  # while leading
        self._proposals = Proposals(self, host.send, timing.commands_queue_size, timing.commands_wait_leader)
        self._timers: dict[str, tuple[int, Handle]] = {}  # name -> (its number, its handle)
        self._timer_count = 0
        self._later("start", 0.0, _nothing)

    # -- what the engine and schedb's adapter read ---------------------------------

    @property
    def node_id(self) -> str:
        return self.host.node_id

    @property
    def peers(self) -> list[str]:
        """The other members, sorted."""
        return list(self._peers)

    @property
    def role(self) -> Role:
        return self._role

    @property
    def is_leader(self) -> bool:
        return self._role == Role.LEADER

    @property
    def leader_id(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self.disk.term

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def last_applied(self) -> int:
        return self._last_applied

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def log_len(self) -> int:
        return len(self.disk.entries)

    def has_quorum(self) -> bool:
        """pysyncobj's hasQuorum: this node and the peers it holds a TCP connection to."""
        return 1 + len(self._connected()) > len(self.members) / 2

    # -- what the engine calls -----------------------------------------------------

    def propose(self, data: bytes, callback: Callback) -> None:
        """Queue a command, as SyncObj._applyCommand: the queue is worked off on the node's own
        loop, so the callback never runs inside this call (but for QUEUE_FULL, as in pysyncobj)."""
        if not self._stopped:
            self._proposals.put(data, callback)
            self._later("queue", 0.0, _nothing)  # the tick after it works the queue

    def transfer_leadership(self, callback: Callback | None = None) -> Fail:
        """TimeoutNow to the most caught-up connected follower; denied unless it holds the whole log."""
        result = Fail.NOT_LEADER
        if self._followers is not None:
            target = self._followers.transfer_target(self._connected(), self._log.last_index)
            result = Fail.REQUEST_DENIED if target is None else Fail.SUCCESS
            if target is not None:
                self.host.send(target, {"type": "timeout_now", "term": self.term})
        if callback is not None:
            callback(None, result)
        return result

    def receive(self, sender: str, message: dict[str, Any]) -> None:
        """One message from `sender`, on this node's loop."""
        if self._stopped:
            return
        self._start()
        handler = _HANDLERS.get(message.get("type", ""))
        if handler is not None:
            handler(self, sender, message)
        self._tick()

    def stop(self) -> None:
        """The process died: nothing runs any more; the engine keeps the Disk."""
        self._stopped = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # -- the loop ---------------------------------------------------------------------

    def _later(self, name: str, delay_s: float, fn: Callable[[], None]) -> None:
        """One timer per name: setting it again replaces the pending one."""
        self._cancel(name)
        self._timer_count += 1
        handle = self.host.call_later(max(delay_s, 0.0), self._fire, name, self._timer_count, fn)
        self._timers[name] = (self._timer_count, handle)

    def _fire(self, name: str, number: int, fn: Callable[[], None]) -> None:
        if self._stopped or self._timers.get(name, (0, None))[0] != number:
            return  # stopped, or replaced by a later timer of that name (whatever cancel managed)
        del self._timers[name]
        self._start()
        fn()
        self._tick()

    def _cancel(self, name: str) -> None:
        _, handle = self._timers.pop(name, (0, None))
        if handle is not None:
            handle.cancel()

    def _start(self) -> None:
        """pysyncobj's first tick: load the dump, then (in _tick) replay the journal up to the
        persisted commit index, with or without a leader."""
        if self._started:
            return
        self._started = True
        snapshot = self.disk.snapshot
        if snapshot is not None:
            self.machine.restore(snapshot.data)
            self._last_applied = snapshot.index
            self._on_snapshot_loaded()
        self._reset_deadline()

    def _tick(self) -> None:
        """What pysyncobj's tick does after any event: apply, note readiness, work the queue."""
        if self._stopped:  # a callback of this very tick may have been the crash
            return
        self._apply_committed()
        if self._proposals.drain():
            self._broadcast()
            self._advance_commit()  # alone in its cluster, the leader's own copy is a majority
            self._apply_committed()
        if not self._ready and self._leader_commit is not None and self._last_applied == self._leader_commit:
            self._ready = True  # onReady fires once; isReady stays True

    def _connected(self) -> list[str]:
        return [peer for peer in self._peers if self.host.process_alive(peer)]

    # -- elections ----------------------------------------------------------------------

    def _reset_deadline(self) -> None:
        t = self.timing
        timeout = t.election_min_s + (t.election_max_s - t.election_min_s) * self.host.rng.random()
        self._deadline = self.host.now() + timeout
        if "election" not in self._timers and self._role != Role.LEADER:
            self._later("election", timeout, self._on_election_timer)

    def _on_election_timer(self) -> None:
        now = self.host.now()
        if self._role == Role.LEADER:
            return
        if now < self._deadline - TIMER_SLACK_S:  # reset meanwhile: sleep until the new deadline
            self._later("election", self._deadline - now, self._on_election_timer)
        elif not self.may_lead:  # schedb's RaftNode._onTick keeps pushing the deadline out
            self._deadline = now + self.timing.election_max_s
            self._later("election", self.timing.election_max_s, self._on_election_timer)
        elif self._peers and not self._connected():
            # pysyncobj stands only when connected to anyone; it reconnects every connection_retry_s
            self._later("election", self.timing.connection_retry_s, self._on_election_timer)
        else:
            self._start_election()

    def _start_election(self) -> None:
        self._leader = None
        self._role = Role.CANDIDATE
        self._set_term(self.term + 1, self.host.node_id)
        self._reset_deadline()
        self._votes = {self.host.node_id}
        for peer in self._peers:
            self.host.send(peer, {"type": "request_vote", "term": self.term,
                                  "last_log_index": self._log.last_index, "last_log_term": self._log.last_term})
        self._proposals.leader_changed()
        self._count_votes()

    def _count_votes(self) -> None:
        if self._role == Role.CANDIDATE and len(self._votes) > len(self.members) / 2:
            self._become_leader()

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self.host.node_id
        if self.on_leading is not None:
            self.on_leading()
        self._cancel("election")
        self._followers = Followers(self._peers, self._log.last_index, self.host.now())
        self._log.append(Entry(self.term, NO_OP))  # commands proposed from now on queue up behind it
        self._on_heartbeat()

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term > self.term:
            self._set_term(term, None)
        self._role = Role.FOLLOWER
        self._leader = leader
        self._followers = None
        self._cancel("heartbeat")
        if "election" not in self._timers:  # a former leader's deadline passed long ago: it stands at once
            self._later("election", self._deadline - self.host.now(), self._on_election_timer)

    def _set_term(self, term: int, voted_for: str | None) -> None:
        self.disk.term = term
        self.disk.voted_for = voted_for

    # -- the leader's side ------------------------------------------------------------

    def _on_heartbeat(self) -> None:
        if self._followers is None:
            return
        if not self._followers.heard_from_majority(self.host.now() - self.timing.leader_fallback_s):
            self._become_follower(self.term, None)  # leader fallback: the term stays
            return
        self._leader_commit = self._commit
        self._broadcast()
        self._later("heartbeat", self.timing.heartbeat_s, self._on_heartbeat)

    def _broadcast(self) -> None:
        if self._followers is None:
            return
        for peer in self._connected():  # pysyncobj sends only over live connections
            self.host.send(peer, self._followers.message_for(peer, self._log, self.term, self._commit))

    def _on_next_node_idx(self, sender: str, msg: dict[str, Any]) -> None:
        # schedb's RaftNode notes every answer, whatever this node's role (follower_acks)
        match = msg["next_node_idx"] - 1 if msg["success"] else -1
        self.follower_acks[sender] = (self.host.now(), max(self.follower_acks.get(sender, (0.0, 0))[1], match))
        if msg["term"] > self.term:
            self._become_follower(msg["term"], None)
        if self._followers is None or msg["term"] != self.term:
            return
        if self._followers.answered(sender, self.host.now(), msg, self._log.last_index):
            self._advance_commit()

    def _advance_commit(self) -> None:
        """Commit the highest index a majority holds, if it is of this term (Raft's §5.4.2)."""
        if self._followers is None:
            return
        index = self._followers.majority_holds(self._log.last_index)
        if index > self._commit and self._log.term_at(index) == self.term:
            self._set_commit(index)
            self._leader_commit = index

    def _set_commit(self, index: int) -> None:
        self._commit = index
        self.disk.commit_index = index

    # -- the follower's side ----------------------------------------------------------

    def _hear_leader(self, sender: str, msg: dict[str, Any]) -> bool:
        """A message from a leader; False if its term is stale (pysyncobj ignores it, unanswered)."""
        if msg["term"] < self.term:
            return False
        if self.on_append_entries is not None:
            self.on_append_entries(msg)
        if self._leader != sender:
            self._proposals.leader_changed()
        self._become_follower(msg["term"], sender)
        self._reset_deadline()
        self._leader_commit = msg["commit_index"]
        return True

    def _on_append_entries(self, sender: str, msg: dict[str, Any]) -> None:
        if not self._hear_leader(sender, msg):
            return
        entries = [Entry(term, data) for term, data in msg["entries"]]
        accepted, next_index = self._log.accept(msg["prevLogIdx"], msg["prevLogTerm"], entries, self._commit)
        self._answer(sender, accepted, next_index)
        if accepted:  # commit only what this message vouched for: later entries may be a former leader's
            self._learn_commit(min(msg["commit_index"], next_index - 1))

    def _on_install_snapshot(self, sender: str, msg: dict[str, Any]) -> None:
        if not self._hear_leader(sender, msg):
            return
        snapshot = Snapshot(msg["snapshot_index"], msg["snapshot_term"], msg["data"])
        if snapshot.index > self._commit:  # else stale (reordered): this node has it all, committed
            self._log.install(snapshot)
            self.machine.restore(snapshot.data)
            self._last_applied = snapshot.index
            self._set_commit(snapshot.index)
            self._proposals.skipped_through(snapshot.index)
            self._on_snapshot_loaded()
        self._answer(sender, True, snapshot.index + 1)
        self._learn_commit(min(msg["commit_index"], snapshot.index))

    def _learn_commit(self, index: int) -> None:
        if index > self._commit:
            self._set_commit(index)

    def _answer(self, leader: str, success: bool, next_index: int) -> None:
        self.host.send(leader, {"type": "next_node_idx", "term": self.term, "next_node_idx": next_index,
                                "success": success, "reset": not success})

    def _on_request_vote(self, sender: str, msg: dict[str, Any]) -> None:
        if msg["term"] > self.term:
            self._become_follower(msg["term"], None)
        if self._role == Role.LEADER or msg["term"] < self.term or self.disk.voted_for is not None:
            return
        if not self._log.at_least_as_up_to_date(msg["last_log_index"], msg["last_log_term"]):
            return
        self._set_term(self.term, sender)
        self._reset_deadline()
        self.host.send(sender, {"type": "response_vote", "term": msg["term"]})

    def _on_response_vote(self, sender: str, msg: dict[str, Any]) -> None:
        if msg["term"] == self.term and self._role == Role.CANDIDATE:
            self._votes.add(sender)
            self._count_votes()

    def _on_timeout_now(self, sender: str, msg: dict[str, Any]) -> None:
        if msg["term"] >= self.term and sender == self._leader and self._role == Role.FOLLOWER:
            self._deadline = self.host.now()
            self._later("election", 0.0, self._on_election_timer)  # which still asks may_lead

    # -- applying and proposals -----------------------------------------------------------

    def _apply_committed(self) -> None:
        if self._last_applied >= self._commit:
            return
        while self._last_applied < self._commit:
            index = self._last_applied + 1
            entry = self._log.entry(index)
            result = self.machine.apply(entry.data) if entry.data != NO_OP else None
            self._last_applied = index
            self._proposals.applied(index, entry.term, result)
        self._on_applied()
        if self._last_applied - self._log.base_index > self.timing.compaction_min_entries:
            self._log.compact(self._last_applied, self.machine.snapshot())
        self._broadcast()  # a leader's followers learn the new commit index at once

    def append_command(self, data: bytes) -> tuple[int, int]:
        """A leader's proposal goes to the end of its log: (index, term)."""
        return self._log.append(Entry(self.term, data)), self.term

    def _on_apply_command(self, sender: str, msg: dict[str, Any]) -> None:
        self._proposals.on_apply_command(sender, msg)

    def _on_apply_command_response(self, sender: str, msg: dict[str, Any]) -> None:
        self._proposals.on_apply_command_response(msg)


def _nothing() -> None:
    """A timer whose work is the tick after it (RaftNodeModel._fire)."""


_HANDLERS: dict[str, Callable[[RaftNodeModel, str, dict[str, Any]], None]] = {
    "append_entries": RaftNodeModel._on_append_entries,
    "install_snapshot": RaftNodeModel._on_install_snapshot,
    "next_node_idx": RaftNodeModel._on_next_node_idx,
    "request_vote": RaftNodeModel._on_request_vote,
    "response_vote": RaftNodeModel._on_response_vote,
    "timeout_now": RaftNodeModel._on_timeout_now,
    "apply_command": RaftNodeModel._on_apply_command,
    "apply_command_response": RaftNodeModel._on_apply_command_response,
}
