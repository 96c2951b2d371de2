"""A message-level Raft node with pysyncobj 0.3.17's observable semantics, for the simulator:
each simulated node runs this in place of pysyncobj. It is not under test; it is kept simple.

Modelled as pysyncobj does it: a random election timeout per deadline, reset by the current
leader's append_entries and by granting a vote; one vote per term (`voted_for` is durable) and
the log up-to-date check; a no-op entry at the start of each leader's term; append_entries every
heartbeat and at once on a proposal or after the leader applies; a follower that is behind the
leader's snapshot gets it whole; leader fallback (a leader without answers from a majority within
leader_fallback_s turns follower, and the election deadline it left behind while leading has long
passed, so it stands again at once); proposals through a queue that waits for a known leader
(`commandsWaitLeader`), forwarded by followers, answered by the leader with the entry's index and
term, and called back on the proposer only when it applies that index itself (SUCCESS if the term
matches, else DISCARDED; UNKNOWN_OUTCOME if it already applied the index); LEADER_CHANGED for
forwards still unanswered when the leader changes; `isReady`; `hasQuorum`; TimeoutNow transfer.

Left out or approximated: membership changes (the members are fixed); batching, TCP framing and
chunked snapshot transfer (one message carries every entry from next_index, or the whole
snapshot); TCP connections are approximated by `host.process_alive` (a partition keeps a peer
"connected", a dead process does not); compaction by entry count only (no compaction_min_s) and
synchronous (pysyncobj forks); no code versions. Where pysyncobj leans on TCP's in-order delivery
the model does not, because the simulated network reorders: replies carry the term, stale
snapshots are ignored, and only a conflicting entry truncates the log.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from devkit.sim.raft_log import NO_OP, Disk, Entry, RaftLog, Snapshot

Callback = Callable[[Any, int], None]


class Handle(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """The simulator engine's side of one node: its clock, timers, network and random source."""

    node_id: str
    rng: random.Random

    def now(self) -> float: ...
    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Handle: ...
    def send(self, to: str, message: dict[str, Any]) -> None: ...
    def process_alive(self, node_id: str) -> bool: ...


class Machine(Protocol):
    def apply(self, data: bytes) -> Any: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class Fail(IntEnum):
    """pysyncobj.FAIL_REASON, same names and values."""

    SUCCESS = 0
    QUEUE_FULL = 1
    MISSING_LEADER = 2
    DISCARDED = 3
    NOT_LEADER = 4
    LEADER_CHANGED = 5
    REQUEST_DENIED = 6
    UNKNOWN_OUTCOME = 7


class Role(IntEnum):
    """pysyncobj's _RAFT_STATE values (getStatus()['state'])."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2


@dataclass(frozen=True)
class RaftTiming:
    heartbeat_s: float = 0.1  # appendEntriesPeriod
    election_min_s: float = 0.4
    election_max_s: float = 1.2
    leader_fallback_s: float = 3.0
    compaction_min_entries: int = 500
    connection_retry_s: float = 1.0  # how soon an isolated node looks again for a live peer
    commands_queue_size: int = 4000  # schedb: http.pending_commands_max * 4
    commands_wait_leader: bool = True  # pysyncobj's default, which schedb keeps


@dataclass(frozen=True)
class _Forwarded:
    """A proposal a follower forwarded: answered with a message, not a callback."""

    node: str
    request_id: int


class RaftNodeModel:
    def __init__(self, host: Host, members: list[str], timing: RaftTiming, disk: Disk, machine: Machine,
                 on_applied: Callable[[], None], on_snapshot_loaded: Callable[[], None]) -> None:
        self.host = host
        self.members = sorted(members)
        self.timing = timing
        self.disk = disk
        self.machine = machine
        self._on_applied = on_applied
        self._on_snapshot_loaded = on_snapshot_loaded
        self.may_lead = True  # set by the engine (schedb's clock watch)
        self.on_append_entries: Callable[[dict[str, Any]], None] | None = None
        self.on_leading: Callable[[], None] | None = None
        self.follower_acks: dict[str, tuple[float, int]] = {}
        self._log = RaftLog(disk)
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._commit = max(min(disk.commit_index, self._log.last_index), self._log.base_index)
        self._last_applied = 0  # the journal replay (_start) brings it up
        self._leader_commit: int | None = None
        self._ready = False
        self._stopped = False
        self._started = False
        self._deadline = 0.0
        self._votes: set[str] = set()
        self._next_index: dict[str, int] = {}
        self._match_index: dict[str, int] = {}
        self._last_response: dict[str, float] = {}
        self._queue: deque[tuple[bytes, Callback | _Forwarded]] = deque()
        self._waiting_commit: dict[int, list[tuple[int, Callback]]] = {}
        self._waiting_reply: dict[int, Callback] = {}
        self._request_ids = 0
        self._timers: dict[str, Handle] = {}
        self._later("start", 0.0, self._start)

    # -- what the engine and schedb's adapter read ---------------------------------

    @property
    def node_id(self) -> str:
        return self.host.node_id

    @property
    def peers(self) -> list[str]:
        return [m for m in self.members if m != self.host.node_id]

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
        connected = sum(1 for peer in self.peers if self.host.process_alive(peer))
        return 1 + connected > len(self.members) / 2

    # -- what the engine calls -----------------------------------------------------

    def propose(self, data: bytes, callback: Callback) -> None:
        """Queue a command, as SyncObj._applyCommand: the queue is worked off on the node's own
        loop, so the callback never runs inside this call (but for QUEUE_FULL, as in pysyncobj)."""
        if self._stopped:
            return
        if len(self._queue) >= self.timing.commands_queue_size:
            callback(None, Fail.QUEUE_FULL)
            return
        self._queue.append((data, callback))
        self._later("queue", 0.0, _nothing)  # the tick after it works the queue

    def transfer_leadership(self, callback: Callback | None = None) -> Fail:
        """TimeoutNow to the most caught-up connected follower; denied unless it has the whole log."""
        result = self._transfer_target()
        if isinstance(result, str):
            self.host.send(result, {"type": "timeout_now", "term": self.term})
            result = Fail.SUCCESS
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
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # -- timers -----------------------------------------------------------------------

    def _later(self, name: str, delay_s: float, fn: Callable[[], None]) -> None:
        """One timer per name: setting it again replaces the pending one."""
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self.host.call_later(max(delay_s, 0.0), self._fire, name, fn)

    def _fire(self, name: str, fn: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        if self._stopped:
            return
        self._start()
        fn()
        self._tick()

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _start(self) -> None:
        """pysyncobj's first tick: load the dump, then replay the journal up to the persisted
        commit index, with or without a leader."""
        if self._started:
            return
        self._started = True
        snapshot = self.disk.snapshot
        if snapshot is not None:
            self.machine.restore(snapshot.data)
            self._last_applied = snapshot.index
            self._on_snapshot_loaded()
        self._reset_deadline()
        self._tick()

    def _tick(self) -> None:
        """What pysyncobj's tick does after any event: apply, check readiness, work the queue."""
        if self._stopped:  # a callback of this very tick may have been the crash
            return
        self._apply_committed()
        if not self._ready and self._leader_commit is not None and self._last_applied == self._leader_commit:
            self._ready = True  # onReady fires once; isReady stays True
        self._drain_queue()

    # -- elections ----------------------------------------------------------------------

    def _reset_deadline(self) -> None:
        t = self.timing
        timeout = t.election_min_s + (t.election_max_s - t.election_min_s) * self.host.rng.random()
        self._deadline = self.host.now() + timeout
        if "election" not in self._timers and self._role != Role.LEADER:
            self._later("election", self._deadline - self.host.now(), self._on_election_timer)

    def _on_election_timer(self) -> None:
        now = self.host.now()
        if self._role == Role.LEADER:
            return
        if now < self._deadline:  # reset meanwhile: sleep until the new deadline
            self._later("election", self._deadline - now, self._on_election_timer)
        elif not self.may_lead:  # schedb's RaftNode._onTick keeps pushing the deadline out
            self._deadline = now + self.timing.election_max_s
            self._later("election", self.timing.election_max_s, self._on_election_timer)
        elif self.peers and not any(self.host.process_alive(p) for p in self.peers):
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
        for peer in self.peers:
            self.host.send(peer, {"type": "request_vote", "term": self.term,
                                  "last_log_index": self._log.last_index, "last_log_term": self._log.last_term})
        self._fail_waiting_replies()
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
        now = self.host.now()
        for peer in self.peers:
            self._next_index[peer] = self._log.last_index + 1
            self._match_index[peer] = 0
            self._last_response[peer] = now
        self._log.append(Entry(self.term, NO_OP))  # commands proposed meanwhile wait behind it
        self._leader_commit = self._commit
        self._on_heartbeat()

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term > self.term:
            self._set_term(term, None)
        self._role = Role.FOLLOWER
        self._leader = leader
        self._cancel("heartbeat")
        if "election" not in self._timers:  # a former leader's deadline passed long ago: it stands at once
            self._later("election", self._deadline - self.host.now(), self._on_election_timer)

    def _set_term(self, term: int, voted_for: str | None) -> None:
        self.disk.term = term
        self.disk.voted_for = voted_for

    def _transfer_target(self) -> str | Fail:
        if self._role != Role.LEADER:
            return Fail.NOT_LEADER
        connected = [(self._match_index.get(p, 0), p) for p in self.peers if self.host.process_alive(p)]
        if not connected:
            return Fail.REQUEST_DENIED
        match, peer = max(connected)
        return peer if match == self._log.last_index else Fail.REQUEST_DENIED

    # -- the leader's side ------------------------------------------------------------

    def _on_heartbeat(self) -> None:
        if self._role != Role.LEADER:
            return
        if self._lost_majority():
            self._become_follower(self.term, None)  # leader fallback: the term stays
            return
        self._leader_commit = self._commit
        self._broadcast()
        self._later("heartbeat", self.timing.heartbeat_s, self._on_heartbeat)

    def _lost_majority(self) -> bool:
        since = self.host.now() - self.timing.leader_fallback_s
        heard = 1 + sum(1 for p in self.peers if self._last_response.get(p, 0.0) > since)
        return heard <= len(self.members) / 2

    def _broadcast(self) -> None:
        for peer in self.peers:
            if self.host.process_alive(peer):  # pysyncobj sends only over live connections
                self._send_append_entries(peer)

    def _send_append_entries(self, peer: str) -> None:
        log = self._log
        next_index = self._next_index[peer]
        if next_index <= log.base_index:  # the entries it needs are compacted away
            snap = self.disk.snapshot
            assert snap is not None
            self.host.send(peer, {"type": "install_snapshot", "term": self.term, "commit_index": self._commit,
                                  "snapshot_index": snap.index, "snapshot_term": snap.term, "data": snap.data})
            self._next_index[peer] = snap.index + 1
            return
        prev = next_index - 1
        self.host.send(peer, {"type": "append_entries", "term": self.term, "commit_index": self._commit,
                              "prevLogIdx": prev, "prevLogTerm": log.term_at(prev),
                              "entries": [[e.term, e.data] for e in log.entries_from(next_index)]})
        self._next_index[peer] = log.last_index + 1  # optimistic, as pysyncobj: a miss comes back as a reset

    def _on_next_node_idx(self, sender: str, msg: dict[str, Any]) -> None:
        # schedb's RaftNode notes every answer, whatever this node's role (follower_acks)
        match = msg["next_node_idx"] - 1 if msg["success"] else -1
        self.follower_acks[sender] = (self.host.now(), max(self.follower_acks.get(sender, (0.0, 0))[1], match))
        if msg["term"] > self.term:
            self._become_follower(msg["term"], None)
        if self._role != Role.LEADER or msg["term"] != self.term:
            return
        self._last_response[sender] = self.host.now()
        next_index = msg["next_node_idx"]
        if msg["reset"]:
            self._next_index[sender] = min(max(next_index, 1), self._log.last_index + 1)
        if msg["success"] and next_index - 1 > self._match_index[sender]:
            self._match_index[sender] = next_index - 1
            self._next_index[sender] = next_index
            self._advance_commit()

    def _advance_commit(self) -> None:
        """Commit the highest index a majority holds, if it is of this term (Raft's §5.4.2)."""
        held = sorted([self._log.last_index] + [self._match_index[p] for p in self.peers], reverse=True)
        majority_holds = held[len(self.members) // 2]
        if majority_holds > self._commit and self._log.term_at(majority_holds) == self.term:
            self._set_commit(majority_holds)

    def _set_commit(self, index: int) -> None:
        self._commit = index
        self.disk.commit_index = index
        if self._role == Role.LEADER:
            self._leader_commit = index

    # -- the follower's side ----------------------------------------------------------

    def _hear_leader(self, sender: str, msg: dict[str, Any]) -> bool:
        """A message from a leader; False if its term is stale (pysyncobj ignores it, unanswered)."""
        if msg["term"] < self.term:
            return False
        if self.on_append_entries is not None:
            self.on_append_entries(msg)
        if self._leader != sender:
            self._fail_waiting_replies()
        self._become_follower(msg["term"], sender)
        self._reset_deadline()
        self._leader_commit = msg["commit_index"]
        return True

    def _on_append_entries(self, sender: str, msg: dict[str, Any]) -> None:
        if not self._hear_leader(sender, msg):
            return
        prev, log = msg["prevLogIdx"], self._log
        if prev < log.base_index:  # already in this node's snapshot: committed, so the same
            self._answer(sender, False, log.base_index + 1)
        elif log.term_at(prev) is None:
            self._answer(sender, False, log.last_index + 1)
        elif log.term_at(prev) != msg["prevLogTerm"]:
            self._answer(sender, False, prev)  # back off one entry, as pysyncobj
        else:
            entries = [Entry(term, data) for term, data in msg["entries"]]
            last = log.merge(prev, entries, self._commit)
            self._answer(sender, True, last + 1)
            # only what this message vouched for: later entries may be a stale leader's
            if min(msg["commit_index"], last) > self._commit:
                self._set_commit(min(msg["commit_index"], last))

    def _on_install_snapshot(self, sender: str, msg: dict[str, Any]) -> None:
        if not self._hear_leader(sender, msg):
            return
        snapshot = Snapshot(msg["snapshot_index"], msg["snapshot_term"], msg["data"])
        if snapshot.index > self._commit:  # else stale (reordered): this node has it all, committed
            self._log.install(snapshot)
            self.machine.restore(snapshot.data)
            self._last_applied = snapshot.index
            self._set_commit(snapshot.index)
            for index in [i for i in self._waiting_commit if i <= snapshot.index]:
                del self._waiting_commit[index]  # never applied here one by one: no callback, as pysyncobj
            self._on_snapshot_loaded()
        self._answer(sender, True, snapshot.index + 1)
        if min(msg["commit_index"], snapshot.index) > self._commit:
            self._set_commit(min(msg["commit_index"], snapshot.index))

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

    # -- applying -------------------------------------------------------------------------

    def _apply_committed(self) -> None:
        if self._last_applied >= self._commit:
            return
        while self._last_applied < self._commit:
            index = self._last_applied + 1
            entry = self._log.entry(index)
            result = self.machine.apply(entry.data) if entry.data != NO_OP else None
            self._last_applied = index
            for term, callback in self._waiting_commit.pop(index, []):
                if term == entry.term:
                    callback(result, Fail.SUCCESS)
                else:
                    callback(None, Fail.DISCARDED)
        self._on_applied()
        if self._last_applied - self._log.base_index > self.timing.compaction_min_entries:
            self._log.compact(self._last_applied, self.machine.snapshot())
        if self._role == Role.LEADER:
            self._broadcast()  # followers learn the new commit index at once

    # -- proposals -----------------------------------------------------------------------

    def _drain_queue(self) -> None:
        """SyncObj._checkCommandsToApply: a leader appends, a follower forwards to its leader."""
        appended = False
        while self._queue:
            if self._leader is None and self.timing.commands_wait_leader:
                break
            data, requester = self._queue.popleft()
            if self._role == Role.LEADER:
                self._append_proposal(data, requester)
                appended = True
            elif self._leader is not None:
                self._forward(data, requester, self._leader)
            else:
                self._refuse(requester, Fail.MISSING_LEADER)
        if appended:
            self._broadcast()
            self._advance_commit()  # alone in its cluster, the leader's own copy is a majority
            self._apply_committed()

    def _append_proposal(self, data: bytes, requester: Callback | _Forwarded) -> None:
        index = self._log.append(Entry(self.term, data))
        if isinstance(requester, _Forwarded):
            self.host.send(requester.node, {"type": "apply_command_response", "request_id": requester.request_id,
                                            "log_idx": index, "log_term": self.term})
        else:
            self._waiting_commit.setdefault(index, []).append((self.term, requester))

    def _forward(self, data: bytes, requester: Callback | _Forwarded, leader: str) -> None:
        if isinstance(requester, _Forwarded):  # a forward reached a follower: pysyncobj does not pass it on
            self._refuse(requester, Fail.NOT_LEADER)
            return
        self._request_ids += 1
        self._waiting_reply[self._request_ids] = requester
        self.host.send(leader, {"type": "apply_command", "command": data, "request_id": self._request_ids})

    def _refuse(self, requester: Callback | _Forwarded, error: Fail) -> None:
        if isinstance(requester, _Forwarded):
            self.host.send(requester.node, {"type": "apply_command_response", "request_id": requester.request_id,
                                            "error": int(error)})
        else:
            requester(None, error)

    def _on_apply_command(self, sender: str, msg: dict[str, Any]) -> None:
        requester = _Forwarded(sender, msg["request_id"])
        if len(self._queue) >= self.timing.commands_queue_size:
            self._refuse(requester, Fail.QUEUE_FULL)
        else:
            self._queue.append((msg["command"], requester))

    def _on_apply_command_response(self, sender: str, msg: dict[str, Any]) -> None:
        callback = self._waiting_reply.pop(msg["request_id"], None)
        if callback is None:
            return
        if "error" in msg:
            callback(None, Fail(msg["error"]))
        elif msg["log_idx"] <= self._last_applied:
            callback(None, Fail.UNKNOWN_OUTCOME)  # applied before the answer came: which entry is unknowable
        else:
            self._waiting_commit.setdefault(msg["log_idx"], []).append((msg["log_term"], callback))

    def _fail_waiting_replies(self) -> None:
        """SyncObj.__onLeaderChanged: forwards the old leader never answered will not be answered."""
        waiting, self._waiting_reply = self._waiting_reply, {}
        for request_id in sorted(waiting):
            waiting[request_id](None, Fail.LEADER_CHANGED)


def _nothing() -> None:
    pass


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
