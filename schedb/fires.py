"""The book of active fires and its indexes (part of the replicated state).

A fire is active from the moment it exists (assigned by the dispatcher, or
created pending by a trigger, a replay or a backfill) until an outcome ends it
(success, dead letter) or the job is deleted. Indexes:
- `by_node`: fires each executor holds, in assignment order;
- `pending`: fires waiting for the dispatcher to pick an executor;
- `withdrawn`: fires taken back (pause, reschedule) while their webhook may
  already be running, kept (bounded) so a late outcome is still recorded once.
"""

from __future__ import annotations

from typing import Any

Fire = dict[str, Any]
PENDING = ""  # the node of a fire that no executor holds yet


def fire_id_of(job_id: str, scheduled_ms: int) -> str:
    return f"{job_id}:{scheduled_ms}"


class FireBook:
    def __init__(self) -> None:
        self.fires: dict[str, Fire] = {}
        self.by_node: dict[str, dict[str, None]] = {}
        self.pending: dict[str, None] = {}
        self.withdrawn: dict[str, Fire] = {}

    def __len__(self) -> int:
        return len(self.fires)

    def get(self, fire_id: str) -> Fire | None:
        return self.fires.get(fire_id)

    def add(self, fire: Fire) -> None:
        assert fire["fire_id"] not in self.fires, "fire ids are unique among active fires"
        self.fires[fire["fire_id"]] = fire
        self._index(fire)

    def move(self, fire: Fire, node: str) -> None:
        self._unindex(fire)
        fire["node"] = node
        self._index(fire)

    def end(self, fire_id: str) -> Fire:
        fire = self.fires.pop(fire_id)
        self._unindex(fire)
        return fire

    def withdraw(self, fire_id: str, keep_max: int) -> None:
        self.withdrawn[fire_id] = self.end(fire_id)
        while len(self.withdrawn) > keep_max:
            del self.withdrawn[next(iter(self.withdrawn))]

    def forget_withdrawn_of(self, job_id: str) -> None:
        for fire_id in [f for f, fire in self.withdrawn.items() if fire["job_id"] == job_id]:
            del self.withdrawn[fire_id]

    def of_node(self, node: str) -> list[Fire]:
        return [self.fires[f] for f in self.by_node.get(node, {})]

    def pending_fires(self) -> list[Fire]:
        return [self.fires[f] for f in self.pending]

    def to_canonical(self) -> list[Any]:
        return [self.fires, self.by_node, self.pending, self.withdrawn]

    def _index(self, fire: Fire) -> None:
        if fire["node"] == PENDING:
            self.pending[fire["fire_id"]] = None
        else:
            self.by_node.setdefault(fire["node"], {})[fire["fire_id"]] = None

    def _unindex(self, fire: Fire) -> None:
        if fire["node"] == PENDING:
            del self.pending[fire["fire_id"]]
            return
        by_node = self.by_node[fire["node"]]
        del by_node[fire["fire_id"]]
        if not by_node:
            del self.by_node[fire["node"]]
