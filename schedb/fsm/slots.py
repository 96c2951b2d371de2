"""Time slots: which jobs fire next in which second.

A job waiting for its next fire sits in exactly one one-second slot
(`next_fire_ms // 1000`). The dispatcher walks the slots in time order up to
the end of its lookahead window, so finding due jobs costs what is due, not
the number of jobs. Part of the replicated state: plain dicts and a sorted
list, deterministic iteration order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator


class SlotIndex:
    def __init__(self) -> None:
        self.slots: dict[int, dict[str, None]] = {}
        self.keys: list[int] = []  # sorted slot seconds that have at least one job

    def add(self, job_id: str, fire_ms: int) -> None:
        second = fire_ms // 1000
        slot = self.slots.get(second)
        if slot is None:
            slot = self.slots[second] = {}
            insort(self.keys, second)
        slot[job_id] = None

    def remove(self, job_id: str, fire_ms: int) -> None:
        second = fire_ms // 1000
        slot = self.slots.get(second)
        if slot is None or job_id not in slot:
            return
        del slot[job_id]
        if not slot:
            del self.slots[second]
            index = bisect_right(self.keys, second) - 1
            assert self.keys[index] == second, "slot keys out of sync with slots"
            del self.keys[index]

    def up_to(self, until_ms: int, from_ms: int | None = None) -> Iterator[str]:
        """Job ids in slots whose second starts at or before until_ms (and, with from_ms, whose
        second ends at or after from_ms), earliest first."""
        last_second = until_ms // 1000
        start = 0 if from_ms is None else bisect_left(self.keys, from_ms // 1000)
        for second in self.keys[start:]:
            if second > last_second:
                return
            yield from self.slots[second]

    def count_at(self, fire_ms: int) -> int:
        return len(self.slots.get(fire_ms // 1000, {}))

    def __len__(self) -> int:
        return sum(len(s) for s in self.slots.values())

    def to_canonical(self) -> list[list[object]]:
        return [[second, list(self.slots[second])] for second in self.keys]
