"""Misfire policies: what a job does about occurrences it fell behind on.

A job has fallen behind when its next occurrence is later than the misfire
grace (the cluster was down, overloaded, or the job was paused); a little
lateness, as in a leader failover, is not a misfire. Once behind, the job's
`misfire` policy decides about every occurrence up to now:

- `run_once` (default): fire the most recent occurrence once; the earlier
  ones are recorded as missed;
- `run_all`: fire every occurrence inside the catch-up window, oldest first;
  older ones are recorded as missed;
- `skip`: fire none of them; all are recorded as missed, and the job waits for
  its next occurrence after now.

Pure and bounded (at most `scan_max` occurrences are walked), because the
state machine calls it while applying a command.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedb.schedule import Schedule

SCAN_MAX = 1_000


@dataclass(frozen=True)
class CatchUp:
    next_ms: int | None  # the occurrence the job waits for now (it fires if in the past)
    missed_ms: list[int]  # missed occurrences to record, oldest first (bounded)
    missed_total: int  # missed occurrences; past the scan bound, a lower bound


def catch_up(schedule: Schedule, first_ms: int, now_ms: int, policy: str, window_ms: int,
             scan_max: int = SCAN_MAX) -> CatchUp:
    """first_ms is the job's next occurrence, known to be late beyond the grace."""
    keep_from_ms = now_ms - window_ms if policy == "run_all" else now_ms + 1
    missed: list[int] = []
    current: int | None = first_ms
    for _ in range(scan_max):
        if current is None or current >= keep_from_ms:
            return CatchUp(current, missed, len(missed))
        following = schedule.next_after(current)
        if policy == "run_once" and (following is None or following > now_ms):
            return CatchUp(current, missed, len(missed))  # the latest one fires
        missed.append(current)
        current = following
    # Too far behind to walk: jump, and count what could not be listed as one more.
    if policy == "run_once":
        latest = schedule.last_at_or_before(now_ms)
        if latest is not None and latest > missed[-1]:
            return CatchUp(latest, missed, len(missed) + 1)
    return CatchUp(schedule.next_after(min(keep_from_ms, now_ms + 1) - 1), missed, len(missed) + 1)
