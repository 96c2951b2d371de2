"""The console's event feed's queries (schedb.api.events): what changed since the feed's last
look, each look one read of the state. The rules of schedb.fsm.queries hold: copies only.

The feed remembers the team of every job and dead letter (a deleted one's team is still known)
and how many execution records had been written (`executions_written`, State.history_written:
one per record, so the records written since are the newest of State.recent).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import NamedTuple

from schedb.fsm.core import State
from schedb.fsm.model import Execution
from schedb.fsm.queries import plain_copy

SERVICE_PREFIX = "service:"  # a touched id that stands for every job of a service (schedb.commands.jobs_touched)


class FeedBaseline(NamedTuple):
    job_teams: dict[str, str]  # job id -> team
    letter_teams: dict[str, str]  # dead letter's fire id -> its job's team ("" when unknown)
    executions_written: int


class FeedChanges(NamedTuple):
    jobs: list[tuple[str, str | None]]  # each touched job id and its team now (None: gone), in order
    # (team, record) of the new records of jobs that exist, oldest first; None: too many
    executions: list[tuple[str, Execution]] | None
    executions_written: int
    letters_added: list[tuple[str, str]]  # (fire id, team or ""), in the dead-letter queue's order
    letters_removed: list[str]  # fire ids, in the order of `known_letters`


def feed_baseline(state: State) -> FeedBaseline:
    """What the feed compares its next look with: the teams of jobs and dead letters now."""
    job_teams = {job_id: job["team"] for job_id, job in state.jobs.items()}
    letter_teams = {fire_id: job_teams.get(letter["job_id"], "") for fire_id, letter in state.dead_letters.items()}
    return FeedBaseline(job_teams, letter_teams, state.history_written)


def feed_changes(state: State, touched: list[tuple[str, ...]], known_letters: Mapping[str, str],
                 executions_written: int, executions_max: int) -> FeedChanges:
    """The touched jobs' teams now; the execution records written since `executions_written`
    (None when more than executions_max: the feed resyncs); the dead letters added and removed
    since the feed knew `known_letters`."""
    jobs = [(job_id, _team_of(state, job_id)) for ids in touched for job_id in _expand(state, ids)]
    added, removed = _letter_changes(state, known_letters)
    return FeedChanges(jobs, _executions_since(state, executions_written, executions_max),
                       state.history_written, added, removed)


def _team_of(state: State, job_id: str) -> str | None:
    job = state.jobs.get(job_id)
    return None if job is None else job["team"]


def _expand(state: State, ids: tuple[str, ...]) -> list[str]:
    """A registration touches every job of its service (new, changed, orphaned)."""
    if len(ids) == 1 and ids[0].startswith(SERVICE_PREFIX):
        prefix = ids[0].removeprefix(SERVICE_PREFIX) + "."
        return [job_id for job_id in state.jobs if job_id.startswith(prefix)]
    return list(ids)


def _executions_since(state: State, written: int, most: int) -> list[tuple[str, Execution]] | None:
    """Records of a job that still exists and is not an earlier job of the same id."""
    recent = state.recent
    fresh = min(max(0, state.history_written - written), len(recent))
    if fresh > most:
        return None
    rows = list(itertools.islice(reversed(recent), fresh))
    out: list[tuple[str, Execution]] = []
    for row in reversed(rows):  # oldest first
        job = state.jobs.get(row["job_id"])
        if job is not None and row["committed_ms"] >= job["created_ms"]:
            out.append((job["team"], plain_copy(row)))
    return out


def _letter_changes(state: State, known: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    letters = state.dead_letters
    if len(letters) == len(known) and letters.keys() == known.keys():
        return [], []
    added = []
    for fire_id, letter in letters.items():
        if fire_id not in known:
            job = state.jobs.get(letter["job_id"])
            added.append((fire_id, job["team"] if job is not None else ""))
    return added, [fire_id for fire_id in known if fire_id not in letters]
