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

The state machine catches up while applying a command, on every node, for a
job that may be hours or years behind, so the gap is never walked:
- the occurrence to wait for comes from one or two schedule evaluations
  (`next_after`, `last_at_or_before`);
- the records list the first `records_max` missed occurrences, from where the
  job fell behind (the only ones walked);
- `missed_total` is counted arithmetically for `@every` and `@at`. A cron
  schedule can only be walked (a croniter evaluation, ~60 µs, per occurrence),
  so past `records_max` occurrences its count is a lower bound
  (records_max + 1).

Each catch-up reports its `work`, a count (never a time: apply must be
deterministic) of schedule evaluations and records weighted by what they cost
here, in about microseconds. One command spends at most COMMAND_WORK_MAX of it
plus one job's worth (State.may_catch_up, which keeps the count in the state): a
late job past that is left unchanged, and the leader's dispatcher sends it again
in its next round.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedb.schedule import Schedule

# Weights of the work (measured on the reference machine): a cron next_after is 50-90 µs, a cron
# last_at_or_before 120-390 µs; @every and @at are arithmetic; a record written is ~3 µs.
CRON_STEP_WORK = 80
CRON_JUMP_WORK = 400
PLAIN_STEP_WORK = 1
RECORD_WORK = 3
# ~40 ms: with one job's catch-up past it (at most ~8.8k with 100 records), an apply stays ~50 ms.
COMMAND_WORK_MAX = 40_000


@dataclass(frozen=True)
class CatchUp:
    next_ms: int | None  # the occurrence the job waits for now (it fires if in the past)
    missed_ms: list[int]  # the first missed occurrences, oldest first (at most records_max)
    missed_total: int  # every missed occurrence; for cron past records_max, a lower bound
    work: int  # what finding all this cost, in the weights above


def catch_up(schedule: Schedule, first_ms: int, now_ms: int, policy: str, window_ms: int,
             records_max: int) -> CatchUp:
    """first_ms is the job's next occurrence, known to be late beyond the grace."""
    meter = _Meter(schedule)
    next_ms = _resume_at(meter, first_ms, now_ms, policy, window_ms)
    missed, more = _first_missed(meter, first_ms, next_ms, records_max)
    counted = schedule.count_between(first_ms, next_ms)
    total = counted if counted is not None else len(missed) + more
    return CatchUp(next_ms, missed, total, meter.work + len(missed) * RECORD_WORK)


def resume_at(schedule: Schedule, first_ms: int, now_ms: int, policy: str, window_ms: int) -> int | None:
    """The occurrence catch_up has a late job wait for (its next_ms), without listing what was
    missed: the job's catch-up fires first_ms itself when this is first_ms."""
    return _resume_at(_Meter(schedule), first_ms, now_ms, policy, window_ms)


class _Meter:
    """The schedule's evaluations, adding up their work."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.work = 0
        cron = schedule.kind == "cron"
        self._step, self._jump = (CRON_STEP_WORK, CRON_JUMP_WORK) if cron else (PLAIN_STEP_WORK, PLAIN_STEP_WORK)

    def next_after(self, after_ms: int) -> int | None:
        self.work += self._step
        return self.schedule.next_after(after_ms)

    def last_at_or_before(self, at_ms: int) -> int | None:
        self.work += self._jump
        return self.schedule.last_at_or_before(at_ms)


def _resume_at(meter: _Meter, first_ms: int, now_ms: int, policy: str, window_ms: int) -> int | None:
    """The occurrence the policy has the job wait for: the occurrences before it are missed."""
    if policy == "run_all":
        keep_from_ms = now_ms - window_ms
        return first_ms if first_ms >= keep_from_ms else meter.next_after(keep_from_ms - 1)
    if first_ms > now_ms:
        return first_ms  # not due yet: nothing to miss
    if policy == "skip":
        return meter.next_after(now_ms)
    following = meter.next_after(first_ms)  # run_once: most often the job is one occurrence behind
    if following is None or following > now_ms:
        return first_ms
    latest = meter.last_at_or_before(now_ms)  # jump over the gap, however long
    return following if latest is None else max(latest, following)


def _first_missed(meter: _Meter, first_ms: int, end_ms: int | None, limit: int) -> tuple[list[int], bool]:
    """The first `limit` occurrences in [first_ms, end_ms) (None: no end), and whether more follow."""
    listed: list[int] = []
    current: int | None = first_ms
    while current is not None and (end_ms is None or current < end_ms):
        if len(listed) == limit:
            return listed, True
        listed.append(current)
        current = meter.next_after(current)
    return listed, False
