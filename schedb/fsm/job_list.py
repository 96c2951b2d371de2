"""The job list's query (`GET /api/v1/jobs`, schedb.api.joblist): filtered, sorted and counted
in one pass over the state, under its read lock, so kept cheap: only the page's jobs are copied.

Two orders. By id: `after` is the last id seen and, without `total`, the scan stops once the
page is full. By next fire (soonest first, jobs without one last, ties by id): every matching
job has to be looked at, and `cursor` is the sort key of the previous page's last job.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schedb.fsm import tenancy
from schedb.fsm.core import State
from schedb.fsm.model import Job
from schedb.fsm.queries import Actor, job_copy

# (no next fire: 1 sorts after 0, ms, job id): soonest first, unscheduled jobs last, ties by id
SortKey = tuple[int, int, str]


@dataclass(frozen=True)
class JobQuery:
    limit: int
    team: str | None
    tag: tuple[str, str] | None
    paused: bool | None
    q: str  # lower case; "" matches every job
    state: str | None  # active, paused or orphaned
    next_before_ms: int | None
    sort: str  # id or next_fire
    after: str  # sort=id: the last id seen
    cursor: SortKey | None  # sort=next_fire: the last job's key
    total: bool


@dataclass
class JobPage:
    jobs: list[Job]  # copies
    more: bool  # jobs match past the page
    last_key: SortKey | None  # sort=next_fire: the key of the page's last job
    total: int | None  # query.total: how many jobs match in all


def next_fire_ms(job: dict[str, Any], now_ms: int) -> int | None:
    """When the job fires next, counting fires already handed to an executor; None: not scheduled."""
    soonest: int | None = job["next_fire_ms"]
    for ms in job["active_fires"]:  # no list built: the job list calls this for every job
        if ms >= now_ms and (soonest is None or ms < soonest):
            soonest = ms
    return soonest


def sort_key(job: dict[str, Any], now_ms: int) -> SortKey:
    upcoming = next_fire_ms(job, now_ms)
    return (1, 0, job["spec"]["id"]) if upcoming is None else (0, upcoming, job["spec"]["id"])


def job_page(state: State, query: JobQuery, actor: Actor, now_ms: int) -> JobPage:
    """The page of the jobs the query and the actor's team match, in the query's order."""
    scan = _by_id if query.sort == "id" else _by_next_fire
    return scan(state, query, _matcher(query, actor, now_ms), now_ms)


def _matcher(query: JobQuery, actor: Actor, now_ms: int) -> Callable[[dict[str, Any]], bool]:
    """The filters, cheapest first: most jobs are decided by their team or a flag."""

    def matches(job: dict[str, Any]) -> bool:
        spec = job["spec"]
        if (query.team is not None and job["team"] != query.team) or not tenancy.can_touch(actor, job):
            return False
        if query.paused is not None and spec["paused"] != query.paused:
            return False
        if query.state is not None and not _in_state(job, query.state):
            return False
        if query.tag is not None and spec["tags"].get(query.tag[0]) != query.tag[1]:
            return False
        if query.q and not _mentions(job, query.q):
            return False
        if query.next_before_ms is not None:
            upcoming = next_fire_ms(job, now_ms)
            return upcoming is not None and upcoming <= query.next_before_ms
        return True

    return matches


def _in_state(job: dict[str, Any], wanted: str) -> bool:
    if wanted == "orphaned":
        registration = job.get("registration")
        return bool(registration and registration["orphaned"])
    return job["spec"]["paused"] == (wanted == "paused")


def _mentions(job: dict[str, Any], q: str) -> bool:
    """q (lower case) in the id or a description: a registered job's, or the spec's should it get one."""
    if q in job["spec"]["id"].lower():
        return True
    registration = job.get("registration")
    for text in (job["spec"].get("description"), registration and registration.get("description")):
        if isinstance(text, str) and q in text.lower():
            return True
    return False


def _by_id(state: State, query: JobQuery, matches: Callable[[dict[str, Any]], bool], now_ms: int) -> JobPage:
    ids = sorted(state.jobs)
    start = bisect.bisect_right(ids, query.after)
    # the jobs before the page are matched only when they are to be counted
    count = sum(1 for job_id in ids[:start] if matches(state.jobs[job_id])) if query.total else 0
    jobs: list[Job] = []
    more = False
    for job_id in itertools.islice(ids, start, None):
        job = state.jobs[job_id]
        if not matches(job):
            continue
        count += 1
        if len(jobs) < query.limit:
            jobs.append(job_copy(job))
            continue
        more = True
        if not query.total:
            break  # the page is full and nobody asked how many there are
    return JobPage(jobs, more, None, count if query.total else None)


def _by_next_fire(state: State, query: JobQuery, matches: Callable[[dict[str, Any]], bool],
                  now_ms: int) -> JobPage:
    keys = [sort_key(job, now_ms) for job in state.jobs.values() if matches(job)]
    later = keys if query.cursor is None else [k for k in keys if k > query.cursor]
    picked = heapq.nsmallest(query.limit + 1, later)  # O(n log limit), not a sort of all of them
    shown = picked[:query.limit]
    return JobPage([job_copy(state.jobs[job_id]) for _, _, job_id in shown], len(picked) > query.limit,
                   shown[-1] if shown else None, len(keys) if query.total else None)
