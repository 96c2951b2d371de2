"""The oracle "no scheduled occurrence is lost": checks a finished simulation.

Input: the committed log as the simulator saw it (`Applied` entries, in index order), the
final state of one replica (read only, never changed), and `end_ms`, replicated time at the
end (the simulation ends with every fault healed and a quiet period of at least 60 s).

The rule: every occurrence of a job's schedule that fell due while the job was active
(created, not paused, not deleted, and that schedule in force) shows up in the final state:
a history record with an outcome (succeeded, failed, timed_out, unknown), a record that it was
not fired and why (missed, skipped, throttled, with a reason), or a dead letter. And no fire
stays in the fire book long past its lease.

What it leaves out, and why:
- occurrences within `margin_ms` of a change to the job (create, edit, pause, resume), taken
  at the instant its handler ran (replicated time, or the proposer's clock when it leads by at
  most 1 s: schedb.fsm.replicated_time.command_time, recomputed exactly here). A pause or
  reschedule takes back only fires due more than WITHDRAW_SLACK_MS (1 s) later, so the new
  schedule's occurrences in that second may be decided by the old one's fire; either answer
  is right there. The dispatcher's lookahead (5 s) adds no ambiguity: an occurrence due before
  a change was assigned before it (the tick that set replicated time assigned 5 s ahead), and
  one after it comes from the slot the change placed. The default is 1.5 s, not more: a
  resume that lost the job's next fire 3 s later (a past bug) hides inside a 6 s margin
  (tests/sim/test_oracle.py shows both);
- occurrences within `tail_ms` of end_ms: they may not have finished (a lease is the webhook's
  timeout_s + 15 s);
- jobs deleted by the end: a delete forgets the job's history (schedb.fsm.history.forget_job),
  and a fire in flight at the delete ends without a record, so nothing is left to check;
- for a job whose history ring is full (history_per_job records; or when the cluster-wide bound
  may have evicted), occurrences older than what the ring still covers: a record of an
  occurrence commits at most `lookahead_ms` + 2 s before it (a throttle at assignment; clocks),
  so an occurrence later than the oldest kept record by that much has all its records kept;
- jobs the log does not show being created (RegisterJobs): their specs are not in the log.
A catch-up past missed_records_max (100) occurrences records only the first 100: a simulation
with outages that long would see false reports here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from schedb.commands import Command, CreateJob, CreateJobs, DeleteJob, ReplaceJob
from schedb.fsm.core import State
from schedb.fsm.fires import fire_id_of
from schedb.fsm.model import Execution, ExecutionStatus
from schedb.fsm.replicated_time import command_time
from schedb.jobspec import InvalidJob, validate_job
from schedb.schedule import parse_schedule
from schedb.timefmt import ms_to_rfc3339

MARGIN_MS = 1_500  # WITHDRAW_SLACK_MS and half a second (see the docstring)
TAIL_MS = 90_000
STUCK_AFTER_MS = 60_000  # past its lease by this much, a fire is stuck (the quiet period is 60 s)
LOOKAHEAD_MS = 5_000
CLOCK_SLACK_MS = 2_000  # a proposer's lead on replicated time (1 s) and an executor's clock offset
# An attempt's outcome: the webhook was called (or may have been: unknown).
DELIVERED = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT,
                       ExecutionStatus.UNKNOWN})
# Not fired, and the record says why.
NOT_FIRED = frozenset({ExecutionStatus.MISSED, ExecutionStatus.SKIPPED, ExecutionStatus.THROTTLED})


class Applied(NamedTuple):
    """One committed log entry as the simulator saw it applied."""

    index: int
    command: Command
    result: dict[str, Any]
    now_ms: int  # the replica's state.now_ms after applying it (replicated time)


@dataclass(frozen=True)
class Era:
    """A stretch of one job's life with one spec: from a create or an edit to the next change."""

    start_ms: int
    end_ms: int
    spec: dict[str, Any]


@dataclass(frozen=True)
class Bounds:
    """Which occurrences the oracle checks."""

    margin_ms: int
    tail_ms: int
    lookahead_ms: int
    end_ms: int
    tally: dict[str, int]

    def count(self, what: str) -> None:
        self.tally[what] = self.tally.get(what, 0) + 1


# -- the public checks -------------------------------------------------------------------------


def lost_occurrences(applied: Sequence[Applied], final_state: State, end_ms: int, margin_ms: int = MARGIN_MS,
                     tail_ms: int = TAIL_MS, stuck_after_ms: int = STUCK_AFTER_MS,
                     lookahead_ms: int = LOOKAHEAD_MS, tally: dict[str, int] | None = None) -> list[str]:
    """One readable line per problem: an occurrence that fell due while its job was active and
    left no trace, or a fire stuck in the book. Empty when nothing is lost. tally, when given,
    counts what was looked at: jobs, occurrences checked, and those left out near a change or
    before what a full history ring keeps (a check that checks nothing proves nothing)."""
    bounds = Bounds(margin_ms, tail_ms, lookahead_ms, end_ms, tally if tally is not None else {})
    stuck = stuck_fires(final_state, end_ms, stuck_after_ms)
    problems = [line for _, line in stuck]
    stuck_ids = {fire_id for fire_id, _ in stuck}
    for job_id, changes in sorted(job_changes(applied).items()):
        if job_id in final_state.jobs and changes[-1][1] is not None:
            bounds.count("jobs")
            problems += _lost_of_job(final_state, job_id, _eras(changes, end_ms), bounds, stuck_ids)
    return problems


def stuck_fires(final_state: State, end_ms: int, stuck_after_ms: int = STUCK_AFTER_MS) -> list[tuple[str, str]]:
    """(fire id, line) of each fire still in the book whose attempt was due more than its lease
    (timeout_s + lease grace) plus stuck_after_ms before end_ms: it will never end."""
    out = []
    grace_ms = final_state.limits.lease_grace_ms
    for fire_id in sorted(final_state.book.fires):
        fire = final_state.book.fires[fire_id]
        timeout_ms = int(final_state.jobs[fire["job_id"]]["spec"]["webhook"]["timeout_s"] * 1000)
        if fire["due_ms"] + timeout_ms + grace_ms + stuck_after_ms < end_ms:
            what = (f"fire {fire_id} ({fire['trigger']}) still active at the end: attempt {fire['attempt']} "
                    f"on {fire['node'] or 'no node'}, due {ms_to_rfc3339(fire['due_ms'])}, never completed")
            out.append((fire_id, _line(fire["job_id"], fire["scheduled_ms"], what)))
    return out


def outcome_counts(final_state: State) -> dict[str, int]:
    """status -> records of that status in all jobs' history (as the final state keeps it)."""
    counts: dict[str, int] = {}
    for job_id in sorted(final_state.history):
        for record in final_state.history[job_id]:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
    return dict(sorted(counts.items()))


# -- each job's life, from the log ----------------------------------------------------------------

Change = tuple[int, dict[str, Any] | None]  # (handled at, ms; the spec from then on; None: deleted)


def job_changes(applied: Sequence[Applied]) -> dict[str, list[Change]]:
    """job id -> the committed changes of its last life (from its last create), in log order."""
    changes: dict[str, list[Change]] = {}
    for entry in applied:
        for job_id, spec, created in _changes_of(entry):
            if created:
                changes[job_id] = []
            if job_id in changes:
                changes[job_id].append((handled_at(entry), spec))
    return changes


def handled_at(entry: Applied) -> int:
    """The instant the entry's handler ran at: replicated time, or the proposer's clock when it
    leads replicated time by at most a second (as StateMachine.apply chose it)."""
    return command_time(entry.command, entry.now_ms, leader_clock=True)


def _changes_of(entry: Applied) -> Iterator[tuple[str, dict[str, Any] | None, bool]]:
    """(job id, its spec now or None, whether this created it) for each job the entry changed."""
    command, result = entry.command, entry.result
    if "error" in result:
        return
    if isinstance(command, CreateJob) and not result.get("replayed"):
        yield result["job_id"], _normalized(command.spec), True
    elif isinstance(command, CreateJobs):
        for spec, row in zip(command.specs, result.get("results", ()), strict=False):
            if row.get("error") is None:
                yield row["job_id"], _normalized(spec), True
    elif isinstance(command, ReplaceJob):
        yield result["job_id"], _normalized(command.spec), False
    elif isinstance(command, DeleteJob):
        yield result["job_id"], None, False


def _normalized(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the state stored it (apply validated it, so it is valid)."""
    try:
        return validate_job(spec)
    except InvalidJob as exc:  # the state accepted what the oracle refuses: say so loudly
        raise AssertionError(f"a committed spec the oracle cannot read: {exc}") from exc


def _eras(changes: list[Change], end_ms: int) -> list[Era]:
    """The stretches of a live job's last life, each with its spec, up to end_ms."""
    eras = []
    for (start_ms, spec), (next_ms, _) in zip(changes, [*changes[1:], (end_ms, None)], strict=True):
        if spec is not None:
            eras.append(Era(start_ms, next_ms, spec))
    return eras


# -- the occurrences of a live job --------------------------------------------------------------


def _lost_of_job(final_state: State, job_id: str, eras: list[Era], bounds: Bounds,
                 stuck_ids: set[str]) -> list[str]:
    records = _records_by_occurrence(final_state, job_id)
    changes = [era.start_ms for era in eras]
    kept_from = _history_kept_from(final_state, job_id, bounds.lookahead_ms)
    problems = []
    for era in eras:
        for scheduled_ms in _due_while_active(era, changes, bounds):
            if scheduled_ms < kept_from:
                bounds.count("beyond_history")
                continue
            bounds.count("checked")
            what = _missing(final_state, job_id, scheduled_ms, records.get(scheduled_ms, []), stuck_ids)
            if what:
                problems.append(_line(job_id, scheduled_ms, what))
    return problems


def _due_while_active(era: Era, changes: list[int], bounds: Bounds) -> Iterator[int]:
    """The era's occurrences that the oracle checks: the job was active (not paused), and they
    are clear of every change to the job and of the end."""
    spec = era.spec
    if spec["paused"] or spec["schedule"] is None:
        return
    schedule = parse_schedule(spec["schedule"], spec["timezone"])
    last_ms = min(era.end_ms, bounds.end_ms - bounds.tail_ms)
    scheduled_ms = schedule.next_after(era.start_ms - 1)
    while scheduled_ms is not None and scheduled_ms < last_ms:
        if all(abs(scheduled_ms - change_ms) > bounds.margin_ms for change_ms in changes):
            yield scheduled_ms
        else:
            bounds.count("near_change")
        scheduled_ms = schedule.next_after(scheduled_ms)


def _missing(final_state: State, job_id: str, scheduled_ms: int, records: list[Execution],
             stuck_ids: set[str]) -> str:
    """What is missing for the occurrence, or "" when the state accounts for it."""
    fire_id = fire_id_of(job_id, scheduled_ms)
    if any(r["status"] in DELIVERED for r in records) or fire_id in final_state.dead_letters:
        return ""
    if any(r["status"] in NOT_FIRED and r["reason"] for r in records):
        return ""
    if records:
        statuses = ", ".join(sorted({r["status"] for r in records}))
        return f"recorded only as {statuses}, without an outcome or a reason"
    if fire_id in stuck_ids:
        return ""  # reported once, as a stuck fire
    fire = final_state.book.fires.get(fire_id)
    if fire is not None:
        return (f"no record; its fire is still active (attempt {fire['attempt']} on {fire['node'] or 'no node'}, "
                f"due {ms_to_rfc3339(fire['due_ms'])})")
    if fire_id in final_state.book.withdrawn:
        return "no record; its fire was taken back (withdrawn) and never fired again"
    return "no fire, no outcome and no missed/skipped/throttled record"


def _records_by_occurrence(final_state: State, job_id: str) -> dict[int, list[Execution]]:
    out: dict[int, list[Execution]] = {}
    for record in final_state.history.get(job_id, ()):
        out.setdefault(record["scheduled_ms"], []).append(record)
    return out


def _history_kept_from(final_state: State, job_id: str, lookahead_ms: int) -> int:
    """The first occurrence whose records the job's history still holds all of. A ring keeps
    the job's newest records (by commit), so once it may have dropped some, the occurrences
    it covers are those later than its oldest record by what a record may precede its
    occurrence (lookahead and clock slack)."""
    ring = final_state.history.get(job_id)
    if not ring:
        return 0
    bound = ring.maxlen if ring.maxlen is not None else final_state.limits.history_per_job
    may_have_evicted = final_state.history_written > final_state.limits.history_total_max
    if len(ring) < bound and not may_have_evicted:
        return 0
    return ring[0]["committed_ms"] + lookahead_ms + CLOCK_SLACK_MS + 1


def _line(job_id: str, scheduled_ms: int, what: str) -> str:
    return f"{job_id} occurrence {ms_to_rfc3339(scheduled_ms)} ({scheduled_ms} ms): {what}"
