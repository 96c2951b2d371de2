"""Execution history: the records (`record`), a ring per job, and a bound on all the rings together.

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

from schedb.fsm.core import State
from schedb.fsm.fires import fire_id_of
from schedb.fsm.model import Execution, Trigger

STALE_SLACK = 1_024
ERROR_LEN_MAX = 512


def record(state: State, job_id: str, scheduled_ms: int, attempt: int, node_id: str, status: str, *,
           http_status: int = 0, started_ms: int | None = None, finished_ms: int | None = None,
           error: str = "", reason: str = "", trigger: str = Trigger.SCHEDULE, report: dict | None = None) -> None:
    """Append one execution record to the job's history and the cluster-wide list; a run report
    (already checked, schedb.report) only when there is one. status: an ExecutionStatus; reason:
    a Reason or ""."""
    started = state.now_ms if started_ms is None else started_ms
    finished = state.now_ms if finished_ms is None else finished_ms
    execution: Execution = {
        "fire_id": fire_id_of(job_id, scheduled_ms), "job_id": job_id, "scheduled_ms": scheduled_ms,
        "attempt": attempt, "node": node_id, "status": str(status), "http_status": http_status,
        "started_ms": started, "finished_ms": finished, "duration_ms": max(0, finished - started),
        "error": str(error)[:ERROR_LEN_MAX], "committed_ms": state.now_ms, "trigger": str(trigger),
        "reason": str(reason),
    }
    if report:
        execution["report"] = report
    append(state, job_id, execution)  # the job's ring, within the cluster-wide bound
    state.recent.append(execution)


def reindex(state: State) -> None:
    """A snapshot from before the cluster-wide bound (schedb.fsm.upgrade): index its rings,
    oldest commit first."""
    state.history_order = deque()
    state.history_next = {}
    state.history_written = 0
    state.history_total = 0
    entries: list[tuple[int, int, str]] = []
    for job_id, ring in state.history.items():
        start = state.history_written
        entries.extend((row.get("committed_ms", 0), start + i, job_id) for i, row in enumerate(ring))
        state.history_next[job_id] = state.history_written = start + len(ring)
    state.history_total = state.history_written
    entries.sort()  # ties in the order of the rings: the same on every node
    state.history_order.extend((job_id, seq) for _, seq, job_id in entries)


def append(state: State, job_id: str, execution: Execution) -> None:
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
    """After the rings were rebuilt with another history_per_job (schedb.fsm.settings)."""
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
