"""Proposals in the simulator's Raft model (devkit.sim.raft_model), as pysyncobj 0.3.17 handles
them: its command queue (SyncObj._applyCommand, _checkCommandsToApply), the callbacks waiting for
an index to be applied (commandsWaitingCommit) and the forwards waiting for the leader's answer
(commandsWaitingReply).

A proposer is called back when it applies the entry's index itself: SUCCESS with its own apply's
result if the entry there has the term the leader gave it, DISCARDED if another leader's entry
took that index. A follower forwards to its leader, which answers at once with the index and term
it appended at (not the result); the follower then waits for its own apply, like the leader.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

Callback = Callable[[Any, int], None]


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


@dataclass(frozen=True)
class Forwarded:
    """A proposal another node forwarded: answered with a message, not a callback."""

    node: str
    request_id: int


Requester = Callback | Forwarded


class ProposingNode(Protocol):
    """What the queue needs of the Raft node it belongs to."""

    @property
    def is_leader(self) -> bool: ...
    @property
    def leader_id(self) -> str | None: ...
    @property
    def last_applied(self) -> int: ...
    def append_command(self, data: bytes) -> tuple[int, int]: ...  # (index, term) it went to


class Proposals:
    def __init__(self, node: ProposingNode, send: Callable[[str, dict[str, Any]], None], queue_size: int,
                 wait_leader: bool) -> None:
        self._node = node
        self._send = send
        self._queue_size = queue_size
        self._wait_leader = wait_leader
        self._queue: deque[tuple[bytes, Requester]] = deque()
        self._waiting_commit: dict[int, list[tuple[int, Callback]]] = {}
        self._waiting_reply: dict[int, Callback] = {}
        self._request_ids = 0

    def put(self, data: bytes, requester: Requester) -> None:
        if len(self._queue) < self._queue_size:
            self._queue.append((data, requester))
        else:
            self._refuse(requester, Fail.QUEUE_FULL)

    def drain(self) -> bool:
        """Work the queue off: a leader appends, a follower forwards to its leader; with
        wait_leader (pysyncobj's commandsWaitLeader) nothing moves while no leader is known.
        True if the leader appended anything."""
        appended = False
        while self._queue:
            leader = self._node.leader_id
            if leader is None and self._wait_leader:
                break
            data, requester = self._queue.popleft()
            if self._node.is_leader:
                self._append(data, requester)
                appended = True
            elif leader is None:
                self._refuse(requester, Fail.MISSING_LEADER)
            elif isinstance(requester, Forwarded):  # a forward that reached a follower goes no further
                self._refuse(requester, Fail.NOT_LEADER)
            else:
                self._forward(data, requester, leader)
        return appended

    def _append(self, data: bytes, requester: Requester) -> None:
        index, term = self._node.append_command(data)
        if isinstance(requester, Forwarded):
            self._send(requester.node, {"type": "apply_command_response", "request_id": requester.request_id,
                                        "log_idx": index, "log_term": term})
        else:
            self._waiting_commit.setdefault(index, []).append((term, requester))

    def _forward(self, data: bytes, callback: Callback, leader: str) -> None:
        self._request_ids += 1
        self._waiting_reply[self._request_ids] = callback
        self._send(leader, {"type": "apply_command", "command": data, "request_id": self._request_ids})

    def _refuse(self, requester: Requester, error: Fail) -> None:
        if isinstance(requester, Forwarded):
            self._send(requester.node, {"type": "apply_command_response", "request_id": requester.request_id,
                                        "error": int(error)})
        else:
            requester(None, error)

    def on_apply_command(self, sender: str, message: dict[str, Any]) -> None:
        self.put(message["command"], Forwarded(sender, message["request_id"]))

    def on_apply_command_response(self, message: dict[str, Any]) -> None:
        callback = self._waiting_reply.pop(message["request_id"], None)
        if callback is None:
            return
        if "error" in message:
            callback(None, Fail(message["error"]))
        elif message["log_idx"] <= self._node.last_applied:
            callback(None, Fail.UNKNOWN_OUTCOME)  # applied before the answer came: which entry is unknowable
        else:
            self._waiting_commit.setdefault(message["log_idx"], []).append((message["log_term"], callback))

    def applied(self, index: int, term: int, result: Any) -> None:
        """Entry `index` of `term` was applied here with `result`."""
        for wanted_term, callback in self._waiting_commit.pop(index, []):
            if wanted_term == term:
                callback(result, Fail.SUCCESS)
            else:
                callback(None, Fail.DISCARDED)

    def skipped_through(self, index: int) -> None:
        """A snapshot replaced entries up to `index`: they are never applied here one by one, so
        their proposers are never called back (as in pysyncobj; the caller's timeout decides)."""
        for waiting in [i for i in self._waiting_commit if i <= index]:
            del self._waiting_commit[waiting]

    def leader_changed(self) -> None:
        """SyncObj.__onLeaderChanged: forwards the old leader did not answer never will."""
        waiting, self._waiting_reply = self._waiting_reply, {}
        for request_id in sorted(waiting):
            waiting[request_id](None, Fail.LEADER_CHANGED)
