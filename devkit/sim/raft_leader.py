"""The leader's view of its followers in the simulator's Raft model (devkit.sim.raft_model): where
each one's log stands (pysyncobj's raftNextIndex and raftMatchIndex), when each last answered
(the leader fallback), what to send each next, and what a majority holds. Built afresh at each
election won; nothing here outlives the term.
"""

from __future__ import annotations

from typing import Any

from devkit.sim.raft_log import RaftLog


class Followers:
    def __init__(self, peers: list[str], last_index: int, now: float) -> None:
        self.peers = peers
        self.next_index = {peer: last_index + 1 for peer in peers}
        self.match_index = dict.fromkeys(peers, 0)
        self.last_response = dict.fromkeys(peers, now)  # a new leader counts everyone as heard

    def message_for(self, peer: str, log: RaftLog, term: int, commit_index: int) -> dict[str, Any]:
        """The append_entries (or install_snapshot) the peer needs next: every entry from its next
        index. The next index moves past them at once, as in pysyncobj: a lost message comes back
        as a refusal that resets it."""
        next_index = self.next_index[peer]
        self.next_index[peer] = log.last_index + 1
        if next_index <= log.base_index:  # the entries it needs are compacted away
            snapshot = log.disk.snapshot
            assert snapshot is not None
            self.next_index[peer] = snapshot.index + 1
            return {"type": "install_snapshot", "term": term, "commit_index": commit_index,
                    "snapshot_index": snapshot.index, "snapshot_term": snapshot.term, "data": snapshot.data}
        prev = next_index - 1
        return {"type": "append_entries", "term": term, "commit_index": commit_index,
                "prevLogIdx": prev, "prevLogTerm": log.term_at(prev),
                "entries": [[entry.term, entry.data] for entry in log.entries_from(next_index)]}

    def answered(self, peer: str, now: float, answer: dict[str, Any], last_index: int) -> bool:
        """A next_node_idx answer of this term; True if the peer's match index grew."""
        self.last_response[peer] = now
        next_index = answer["next_node_idx"]
        if answer["reset"]:  # a refusal says where to resume; never past this log's end
            self.next_index[peer] = min(max(next_index, 1), last_index + 1)
        if answer["success"] and next_index - 1 > self.match_index[peer]:
            self.match_index[peer] = next_index - 1
            self.next_index[peer] = next_index
            return True
        return False

    def majority_holds(self, last_index: int) -> int:
        """The highest index a majority of the members (the leader with `last_index` among them) hold."""
        held = sorted([last_index] + [self.match_index[peer] for peer in self.peers], reverse=True)
        return held[len(held) // 2]

    def heard_from_majority(self, since: float) -> bool:
        """Has a majority (the leader among them) answered after `since`?"""
        heard = 1 + sum(1 for peer in self.peers if self.last_response[peer] > since)
        return heard > (len(self.peers) + 1) / 2

    def transfer_target(self, connected: list[str], last_index: int) -> str | None:
        """pysyncobj's choice for TimeoutNow: the connected peer with the highest match index (then
        the highest id), and only if it holds the whole log."""
        if not connected:
            return None
        match, peer = max((self.match_index[peer], peer) for peer in connected)
        return peer if match == last_index else None
