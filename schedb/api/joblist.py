"""`GET /api/v1/jobs`: the job list the console and the CLI page through, filtered, sorted and
counted on the server in one pass over the state (under its read lock, so kept cheap: the page's
views are rendered for the page only).

Two orders. By id (the default): `after` is the last id seen and, without `total=true`, the scan
stops once the page is full. By next fire (`sort=next_fire`, soonest first, jobs without one
last, ties by id): every matching job has to be looked at, and `after` is the opaque cursor of
the previous page's `next_after`. A job that fires while a client pages moves in that order,
so it may be seen twice or not at all: the order is a view of a moving schedule.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from schedb.api.auth import Actor, current_actor
from schedb.api.context import NODE, invalid_query, json_response, query_choice, query_flag, query_int
from schedb.api.jobs import LIST_LIMIT_MAX
from schedb.api.problems import Problem
from schedb.api.views import job_view, next_fire_ms
from schedb.clock import wall_ms
from schedb.fsm import tenancy
from schedb.fsm.core import State
from schedb.timefmt import rfc3339_to_ms

Q_LEN_MAX = 200
TIME_LEN_MAX = 64
CURSOR_LEN_MAX = 256
MS_MAX = 2**53  # a cursor's instant: any the state can hold, and no Python big integer
JOB_STATES = ("active", "paused", "orphaned")
SORTS = ("id", "next_fire")
CURSOR_PREFIX = "nf1."  # versioned: a later order can refuse an old cursor instead of misreading it
# (no next fire: 1 sorts after 0, ms, job id): soonest first, unscheduled jobs last, ties by id
SortKey = tuple[int, int, str]


@dataclass(frozen=True)
class JobQuery:
    limit: int
    team: str | None
    tag: tuple[str, str] | None
    paused: bool | None
    q: str  # lower case; "" matches every job
    state: str | None
    next_before_ms: int | None
    sort: str
    after: str  # sort=id: the last id seen
    cursor: SortKey | None  # sort=next_fire: the last job's key
    total: bool


def _invalid(field: str, message: str) -> Problem:
    return invalid_query(field, f"{field}: {message}", message)


def _next_before(request: web.Request) -> int | None:
    text = request.query.get("next_before")
    if text is None:
        return None
    try:
        if len(text) > TIME_LEN_MAX:
            raise ValueError("too long")
        return rfc3339_to_ms(text)
    except (ValueError, OverflowError) as exc:
        raise _invalid("next_before", "an RFC 3339 time with an offset, e.g. 2026-12-01T10:00:00Z") from exc


def parse_query(request: web.Request) -> JobQuery:
    """Every parameter checked before the state is read: a bad one is a 400 naming it."""
    q = request.query.get("q", "")
    if len(q) > Q_LEN_MAX:
        raise _invalid("q", f"at most {Q_LEN_MAX} characters")
    tag = request.query.get("tag")
    tag_key, _, tag_value = (tag or "").partition(":")
    sort = query_choice(request, "sort", SORTS) or "id"
    after = request.query.get("after", "")
    return JobQuery(
        limit=query_int(request, "limit", 100, 1, LIST_LIMIT_MAX), team=request.query.get("team"),
        tag=(tag_key, tag_value) if tag else None, paused=query_flag(request, "paused"), q=q.lower(),
        state=query_choice(request, "status", JOB_STATES), next_before_ms=_next_before(request), sort=sort,
        after=after if sort == "id" else "", cursor=decode_cursor(after) if sort != "id" and after else None,
        total=bool(query_flag(request, "total")))


def encode_cursor(key: SortKey) -> str:
    unscheduled, ms, job_id = key
    text = json.dumps([None if unscheduled else ms, job_id], separators=(",", ":"))
    return CURSOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> SortKey:
    """The key a cursor of ours names; anything else (edited, truncated, of another order) is a 400."""
    try:
        if len(text) > CURSOR_LEN_MAX or not text.startswith(CURSOR_PREFIX):
            raise ValueError("not a cursor")
        body = text.removeprefix(CURSOR_PREFIX)
        ms, job_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:  # bad base64, JSON or shape
        raise _invalid("after", "the next_after of a previous page of this order") from exc
    if not (isinstance(job_id, str) and len(job_id) <= CURSOR_LEN_MAX) or not (
            ms is None or (type(ms) is int and -MS_MAX <= ms <= MS_MAX)):
        raise _invalid("after", "the next_after of a previous page of this order")
    return (1, 0, job_id) if ms is None else (0, ms, job_id)


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


def sort_key(job: dict[str, Any], now_ms: int) -> SortKey:
    upcoming = next_fire_ms(job, now_ms)
    return (1, 0, job["spec"]["id"]) if upcoming is None else (0, upcoming, job["spec"]["id"])


@dataclass
class Page:
    jobs: list[dict[str, Any]]
    next_after: str | None
    total: int | None


def _by_id(state: State, query: JobQuery, matches: Callable[[dict[str, Any]], bool], now_ms: int) -> Page:
    ids = sorted(state.jobs)
    start = bisect.bisect_right(ids, query.after)
    # the jobs before the page are matched only when they are to be counted
    count = sum(1 for job_id in ids[:start] if matches(state.jobs[job_id])) if query.total else 0
    jobs: list[dict[str, Any]] = []
    more = False
    for job_id in itertools.islice(ids, start, None):
        job = state.jobs[job_id]
        if not matches(job):
            continue
        count += 1
        if len(jobs) < query.limit:
            jobs.append(job_view(job, now_ms))
            continue
        more = True
        if not query.total:
            break  # the page is full and nobody asked how many there are
    return Page(jobs, jobs[-1]["id"] if more else None, count if query.total else None)


def _by_next_fire(state: State, query: JobQuery, matches: Callable[[dict[str, Any]], bool], now_ms: int) -> Page:
    keys = [sort_key(job, now_ms) for job in state.jobs.values() if matches(job)]
    later = keys if query.cursor is None else [k for k in keys if k > query.cursor]
    picked = heapq.nsmallest(query.limit + 1, later)  # O(n log limit), not a sort of all of them
    shown = picked[:query.limit]
    jobs = [job_view(state.jobs[job_id], now_ms) for _, _, job_id in shown]
    return Page(jobs, encode_cursor(shown[-1]) if len(picked) > query.limit else None,
                len(keys) if query.total else None)


async def list_jobs(request: web.Request) -> web.Response:
    query = parse_query(request)
    now_ms = wall_ms()
    matches = _matcher(query, current_actor.get(), now_ms)
    scan = _by_id if query.sort == "id" else _by_next_fire
    page: Page = request.app[NODE].replica.read(lambda state: scan(state, query, matches, now_ms))
    body: dict[str, Any] = {"jobs": page.jobs, "next_after": page.next_after}
    if page.total is not None:
        body["total"] = page.total
    return json_response(body)
