"""The durable half of the simulator's Raft model (devkit.sim.raft_model): what a node keeps
through a crash (`Disk`), and the log's index arithmetic over it (`RaftLog`).

Indexes start at 1; index 0 is the empty state before any entry (term 0). pysyncobj starts its
journal with a no-op at index 1 instead: only the absolute numbers differ, never their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_OP = b""  # a leader's first entry of its term; never passed to Machine.apply


@dataclass(frozen=True)
class Entry:
    term: int
    data: bytes


@dataclass(frozen=True)
class Snapshot:
    """The state machine's whole state once entries 1..index were applied."""

    index: int
    term: int
    data: bytes


@dataclass
class Disk:
    """What survives a SIGKILL: pysyncobj writes all of it to its memory-mapped journal and its
    meta file at once, so a crash loses nothing the node wrote."""

    term: int = 0
    voted_for: str | None = None
    entries: list[Entry] = field(default_factory=list)  # the entries after the snapshot
    commit_index: int = 0
    snapshot: Snapshot | None = None


class RaftLog:
    """Entry i lives at disk.entries[i - base_index - 1]; base_index is the snapshot's index."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk

    @property
    def base_index(self) -> int:
        return self.disk.snapshot.index if self.disk.snapshot else 0

    @property
    def base_term(self) -> int:
        return self.disk.snapshot.term if self.disk.snapshot else 0

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.disk.entries)

    @property
    def last_term(self) -> int:
        return self.disk.entries[-1].term if self.disk.entries else self.base_term

    def term_at(self, index: int) -> int | None:
        """The term of entry `index`; None when the log does not know it (compacted or beyond the end)."""
        base = self.base_index
        if index == base:
            return self.base_term
        if base < index <= self.last_index:
            return self.disk.entries[index - base - 1].term
        return None

    def entry(self, index: int) -> Entry:
        base = self.base_index
        if not base < index <= self.last_index:
            raise IndexError(f"entry {index} is not in the log ({base}, {self.last_index}]")
        return self.disk.entries[index - base - 1]

    def entries_from(self, index: int) -> list[Entry]:
        return self.disk.entries[max(index - self.base_index - 1, 0):]

    def append(self, entry: Entry) -> int:
        self.disk.entries.append(entry)
        return self.last_index

    def merge(self, prev_index: int, entries: list[Entry], commit_index: int) -> int:
        """Write a leader's entries that follow `prev_index` (whose term matched); returns the
        index of the last of them. Only a conflicting entry truncates the log: pysyncobj truncates
        on every append_entries, which is safe only over TCP's in-order delivery, and the
        simulated network reorders."""
        index = prev_index
        for entry in entries:
            index += 1
            known = self.term_at(index)
            if known == entry.term:
                continue
            if known is not None:
                if index <= commit_index:  # Raft's log matching property says this cannot happen
                    raise AssertionError(f"a leader overwrites committed entry {index}")
                del self.disk.entries[index - self.base_index - 1:]
            self.disk.entries.append(entry)
        return index

    def accept(self, prev_index: int, prev_term: int, entries: list[Entry], commit_index: int) -> tuple[bool, int]:
        """A leader's append_entries: (accepted, the next index to answer). Refused, the answer says
        where the leader should resume, as pysyncobj's follower does."""
        if prev_index < self.base_index:  # in the snapshot, so committed: resume after it
            return False, self.base_index + 1
        known = self.term_at(prev_index)
        if known is None:
            return False, self.last_index + 1
        if known != prev_term:
            return False, prev_index  # back off one entry
        return True, self.merge(prev_index, entries, commit_index) + 1

    def compact(self, index: int, data: bytes) -> None:
        """Replace entries 1..index (all applied) with a snapshot of the state they built."""
        term = self.term_at(index)
        if term is None or index <= self.base_index:
            return
        del self.disk.entries[:index - self.base_index]
        self.disk.snapshot = Snapshot(index, term, data)

    def install(self, snapshot: Snapshot) -> None:
        """A leader's snapshot: keep the entries after it if the log agrees with it at its index
        (they may count toward a commit on the leader), else start the log afresh after it."""
        if self.term_at(snapshot.index) == snapshot.term:
            del self.disk.entries[:snapshot.index - self.base_index]
        else:
            self.disk.entries.clear()
        self.disk.snapshot = snapshot

    def at_least_as_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's voting rule: is a candidate's log (last_index, last_term) at least as up to date as this one?"""
        return (last_term, last_index) >= (self.last_term, self.last_index)
