"""`GET /api/v1/jobs/{job_id}/stats`: a job's run statistics over its stored history (issue 9).

The figures cover the executions the state keeps for the job (the last
`scheduler.history_per_job`) that finished within the window; `truncated` says when
the window may reach further back than that history. An attempt that called the
webhook (succeeded, failed, timed_out) counts toward the success rate and the
durations; skipped, missed, throttled and unknown executions only toward `by_status`.
Percentiles are nearest-rank. Item totals add up the run reports (schedb.report).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.context import NODE, json_response, query_int
from schedb.api.jobs import STATUSES
from schedb.api.problems import Problem
from schedb.api.views import time_or_none
from schedb.clock import wall_ms
from schedb.fsm import queries
from schedb.fsm.model import CALLED_STATUSES
from schedb.report import ITEM_FIELDS

WINDOW_S_DEFAULT = 86_400
WINDOW_S_MAX = 30 * 86_400
PERCENTILES = (50, 95, 99)


def percentile(ordered: list[int], p: int) -> int:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(rows: list[dict[str, Any]], since_ms: int) -> dict[str, Any]:
    """The statistics of the execution records (oldest first) that finished at or after since_ms."""
    picked = [row for row in rows if row["finished_ms"] >= since_ms]
    by_status = dict.fromkeys(STATUSES, 0)
    for row in picked:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    called = [row for row in picked if row["status"] in CALLED_STATUSES]
    durations = sorted(row["duration_ms"] for row in called)
    items = dict.fromkeys(ITEM_FIELDS, 0)
    reports = 0
    last: dict[str, Any] | None = None
    for row in picked:
        report = row.get("report")
        if not report:
            continue
        reports += 1
        for name in ITEM_FIELDS:
            items[name] += report.get(name, 0)
        if "message" in report:
            last = row
    return {
        "executions": len(picked),
        "by_status": by_status,
        "attempts": len(called),
        "success_rate": by_status["succeeded"] / len(called) if called else None,
        "duration_ms": {**{f"p{p}": percentile(durations, p) if durations else None for p in PERCENTILES},
                        "max": durations[-1] if durations else None},
        "reports": reports,
        "items": {name.removeprefix("items_"): total for name, total in items.items()},
        "last_message": last["report"]["message"] if last else None,
        "last_message_at": time_or_none(last["finished_ms"]) if last else None,
    }


async def job_stats(request: web.Request) -> web.Response:
    node = request.app[NODE]
    job_id = request.match_info["job_id"]
    window_s = query_int(request, "window", WINDOW_S_DEFAULT, 1, WINDOW_S_MAX)
    found = node.replica.read(queries.job_history, job_id, current_actor.get())
    if found is None:  # another team's job does not exist for this key
        raise Problem(404, "Not found", f"job {job_id!r} does not exist", kind="not-found")
    rows, kept = found
    now_ms = wall_ms()
    since_ms = now_ms - window_s * 1000
    # The ring is full and its oldest record is inside the window: older ones in it were dropped.
    truncated = len(rows) >= kept and bool(rows) and rows[0]["finished_ms"] >= since_ms
    return json_response({"job_id": job_id, "window_s": window_s, "from": time_or_none(since_ms),
                          "to": time_or_none(now_ms), "history_per_job": kept, "truncated": truncated,
                          **summarize(rows, since_ms)})
