"""Execution history: a ring per job, and a bound on all the rings together.

Each job keeps its newest `history_per_job` records. Across jobs the cluster
keeps at most `history_total_max`: past it, the oldest records go first,
whatever their job, but every job keeps its newest `history_min_per_job`. The
total is therefore at most max(history_total_max, jobs * history_min_per_job).

How, deterministically and in O(1) amortised per record:
- `history_order` lists (job_id, seq) for records in the order they were
  written. A job's records are numbered one after another, so its ring holds
  seqs [next - len(ring), next) with next = `history_next[job_id]`. A new ring
  starts numbering at the count of records ever written, past every seq that
  an earlier job of the same id used.
- Eviction pops the oldest entry. An entry whose record is gone (its ring
  dropped it on its own, or the job was deleted) is stale: dropped. Otherwise
  the job's oldest record goes, unless the job is down to its minimum: then
  only the entry goes, and those few records wait for the job's next eviction
  (they may outlive newer records of other jobs, at most the minimum per job).
- Stale entries are bounded: when the list is more than twice the records
  (plus STALE_SLACK), it is rebuilt from the live entries. At least half of
  what a rebuild walks goes, so that stays O(1) amortised.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schedb.state import State

STALE_SLACK = 1_024


def init_state(state: State) -> None:
    state.history_order = deque()  # (job_id, seq) in the order records were written
    state.history_next = {}  # job_id -> seq of the job's next record
    state.history_written = 0  # records ever written: where a new ring starts numbering
    state.history_total = 0  # records in all rings


def upgrade(state: State) -> None:
    """A snapshot from before the cluster-wide bound: index its rings, oldest commit first."""
    if hasattr(state, "history_order"):
        return
    init_state(state)
    entries: list[tuple[int, int, str]] = []
    for job_id, ring in state.history.items():
        start = state.history_written
        entries.extend((row.get("committed_ms", 0), start + i, job_id) for i, row in enumerate(ring))
        state.history_next[job_id] = state.history_written = start + len(ring)
    state.history_total = state.history_written
    entries.sort()  # ties in the order of the rings: the same on every node
    state.history_order.extend((job_id, seq) for _, seq, job_id in entries)


def to_canonical(state: State) -> list[Any]:
    return [list(state.history_order), state.history_next, state.history_written, state.history_total]


def append(state: State, job_id: str, execution: dict[str, Any]) -> None:
    """Add a record to the job's ring (made at its first record: an empty ring costs ~0.8 KB),
    then evict the cluster's oldest records past history_total_max."""
    ring = state.history.get(job_id)
    if ring is None:
        ring = state.history[job_id] = deque(maxlen=state.limits.history_per_job)
        state.history_next[job_id] = state.history_written
    before = len(ring)
    ring.append(execution)  # a full ring drops its oldest: that record's entry turns stale
    state.history_total += len(ring) - before
    state.history_order.append((job_id, state.history_next[job_id]))
    state.history_next[job_id] += 1
    state.history_written += 1
    _evict(state)
    _drop_stale(state)


def forget_job(state: State, job_id: str) -> None:
    """A deleted job's records go; their entries turn stale."""
    ring = state.history.pop(job_id, None)
    if ring is not None:
        state.history_total -= len(ring)
        del state.history_next[job_id]
        _drop_stale(state)


def recount(state: State) -> None:
    """After the rings were rebuilt with another history_per_job (limits.set_limits)."""
    state.history_total = sum(len(ring) for ring in state.history.values())


def _evict(state: State) -> None:
    order, keep = state.history_order, state.limits.history_min_per_job
    while state.history_total > state.limits.history_total_max and order:
        job_id, seq = order.popleft()
        if not _live(state, job_id, seq):
            continue
        ring = state.history[job_id]
        if len(ring) > keep:
            ring.popleft()  # the job's oldest: this record, or an older one that waited at the minimum
            state.history_total -= 1


def _live(state: State, job_id: str, seq: int) -> bool:
    ring = state.history.get(job_id)
    return ring is not None and seq >= state.history_next[job_id] - len(ring)


def _drop_stale(state: State) -> None:
    if len(state.history_order) > 2 * state.history_total + STALE_SLACK:
        state.history_order = deque(entry for entry in state.history_order if _live(state, *entry))
