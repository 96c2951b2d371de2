"""`GET /api/v1/jobs`: the job list the console and the CLI page through, filtered, sorted and
counted on the server in one pass over the state (schedb.fsm.job_list, under the state's read
lock, so kept cheap: only the page's jobs are copied, and rendered once the lock is released).

Two orders. By id (the default): `after` is the last id seen and, without `total=true`, the scan
stops once the page is full. By next fire (`sort=next_fire`, soonest first, jobs without one
last, ties by id): every matching job has to be looked at, and `after` is the opaque cursor of
the previous page's `next_after`. A job that fires while a client pages moves in that order,
so it may be seen twice or not at all: the order is a view of a moving schedule.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, cast

from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.context import NODE, invalid_query, json_response, query_choice, query_flag, query_int
from schedb.api.jobs import LIST_LIMIT_MAX
from schedb.api.problems import Problem
from schedb.api.views import job_view
from schedb.clock import wall_ms
from schedb.fsm import job_list
from schedb.fsm.job_list import JobQuery, SortKey
from schedb.timefmt import rfc3339_to_ms

Q_LEN_MAX = 200
TIME_LEN_MAX = 64
CURSOR_LEN_MAX = 256
MS_MAX = 2**53  # a cursor's instant: any the state can hold, and no Python big integer
JOB_STATES = ("active", "paused", "orphaned")
SORTS = ("id", "next_fire")
CURSOR_PREFIX = "nf1."  # versioned: a later order can refuse an old cursor instead of misreading it


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


async def list_jobs(request: web.Request) -> web.Response:
    query = parse_query(request)
    now_ms = wall_ms()
    page = request.app[NODE].replica.read(job_list.job_page, query, current_actor.get(), now_ms)
    next_after = None
    if page.more:
        next_after = page.jobs[-1]["spec"]["id"] if query.sort == "id" else encode_cursor(cast(SortKey, page.last_key))
    body: dict[str, Any] = {"jobs": [job_view(job, now_ms) for job in page.jobs], "next_after": next_after}
    if page.total is not None:
        body["total"] = page.total
    return json_response(body)
