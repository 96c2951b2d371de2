"""The book of active fires and its indexes (part of the replicated state).

A fire is active from the moment it exists (assigned by the dispatcher, or
created pending by a trigger, a replay or a backfill) until an outcome ends it
(success, dead letter) or the job is deleted. Indexes:
- `by_node`: fires each executor holds, in assignment order;
- `pending`: fires waiting for the dispatcher to pick an executor;
- `withdrawn`: fires taken back (pause, reschedule) while their webhook may
  already be running, kept (bounded) so a late outcome is still recorded once;
- `ended`: fires that ended without a success (missed, skipped, dead-lettered)
  while an earlier attempt had not reported: its executor may have been cut off
  after a call that succeeded, with the fire moved on by its lease. Kept
  (bounded) so that attempt's late outcome is recorded too, and a late success
  is the fire's one success.
"""

from __future__ import annotations

from typing import Any

from schedb.fsm.model import Fire

PENDING = ""  # the node of a fire that no executor holds yet
TOUCHED_MAX = 4_096  # changed fire ids kept per node; an executor further behind re-reads all (rare: it looks often)


def fire_id_of(job_id: str, scheduled_ms: int) -> str:
    return f"{job_id}:{scheduled_ms}"


class FireBook:
    def __init__(self) -> None:
        self.fires: dict[str, Fire] = {}
        self.by_node: dict[str, dict[str, None]] = {}
        self.pending: dict[str, None] = {}
        self.withdrawn: dict[str, Fire] = {}
        self.ended: dict[str, Fire] = {}
        # Per node, a version bumped whenever one of its fires changes (added, moved away,
        # ended, next attempt), and the ids changed, oldest first (bounded): an executor
        # looks only at what changed since the version it saw last.
        self.versions: dict[str, int] = {}
        self.touched: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self.fires)

    def get(self, fire_id: str) -> Fire | None:
        return self.fires.get(fire_id)

    def add(self, fire: Fire) -> None:
        assert fire["fire_id"] not in self.fires, "fire ids are unique among active fires"
        self.ended.pop(fire["fire_id"], None)  # a replay: the fire is live again
        self.fires[fire["fire_id"]] = fire
        self._index(fire)

    def move(self, fire: Fire, node: str) -> None:
        self._unindex(fire)
        fire["node"] = node
        self._index(fire)

    def next_attempt(self, fire: Fire, due_ms: int) -> None:
        """A retry: the same executor keeps the fire, with the next attempt due later."""
        fire["attempt"] += 1
        fire["due_ms"] = due_ms
        self._touch(fire["node"], fire["fire_id"])

    def version_of(self, node: str) -> int:
        return self.versions.get(node, 0)

    def touched_since(self, node: str, version: int) -> list[str] | None:
        """Ids of the node's fires changed after `version`; None if the log does not reach back."""
        log = self.touched.get(node, {})
        if version < 0 or (log and next(iter(log.values())) > version + 1):
            return None
        out = []
        for fire_id, touched_at in reversed(log.items()):
            if touched_at <= version:
                break
            out.append(fire_id)
        return out

    def end(self, fire_id: str) -> Fire:
        fire = self.fires.pop(fire_id)
        self._unindex(fire)
        return fire

    def withdraw(self, fire_id: str, keep_max: int) -> None:
        self.withdrawn[fire_id] = self.end(fire_id)
        while len(self.withdrawn) > keep_max:
            del self.withdrawn[next(iter(self.withdrawn))]

    def forget_withdrawn_of(self, job_id: str) -> None:
        for kept in (self.withdrawn, self.ended):
            for fire_id in [f for f, fire in kept.items() if fire["job_id"] == job_id]:
                del kept[fire_id]

    def keep_ended(self, fire: Fire, keep_max: int) -> None:
        """An ended fire, if an attempt of it may still report (see `ended` above)."""
        if _attempts_out(fire):
            self.ended[fire["fire_id"]] = fire
            while len(self.ended) > keep_max:
                del self.ended[next(iter(self.ended))]

    def settle_ended(self, fire: Fire, succeeded: bool) -> None:
        """A late outcome of an ended fire was recorded: a success is its last word, and so is
        the outcome of its last attempt still out."""
        if succeeded or not _attempts_out(fire):
            del self.ended[fire["fire_id"]]

    def of_node(self, node: str) -> list[Fire]:
        return [self.fires[f] for f in self.by_node.get(node, {})]

    def pending_fires(self) -> list[Fire]:
        return [self.fires[f] for f in self.pending]

    def to_canonical(self) -> list[Any]:
        # `ended` only when it holds any: the canonical bytes of a state without are those of the
        # versions before it (tests/unit/test_snapshot_compat.py).
        return [self.fires, self.by_node, self.pending, self.withdrawn] + ([self.ended] if self.ended else [])

    def _touch(self, node: str, fire_id: str) -> None:
        version = self.versions[node] = self.versions.get(node, 0) + 1
        log = self.touched.setdefault(node, {})
        log.pop(fire_id, None)
        log[fire_id] = version
        if len(log) > TOUCHED_MAX:
            del log[next(iter(log))]

    def _index(self, fire: Fire) -> None:
        if fire["node"] == PENDING:
            self.pending[fire["fire_id"]] = None
        else:
            self.by_node.setdefault(fire["node"], {})[fire["fire_id"]] = None
            self._touch(fire["node"], fire["fire_id"])

    def _unindex(self, fire: Fire) -> None:
        if fire["node"] == PENDING:
            del self.pending[fire["fire_id"]]
            return
        self._touch(fire["node"], fire["fire_id"])
        by_node = self.by_node[fire["node"]]
        del by_node[fire["fire_id"]]
        if not by_node:
            del self.by_node[fire["node"]]


def _attempts_out(fire: Fire) -> set[int]:
    """The fire's attempts (of its own retry budget) that have not reported."""
    return set(range(fire["attempt_base"] + 1, fire["attempt"] + 1)) - set(fire["reported"])
