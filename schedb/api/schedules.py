"""`POST /api/v1/schedules/preview`: when would a schedule fire? Nothing is stored.

The instants come from the parser the jobs use (schedb.schedule), so they are the
ones a job with this schedule and timezone gets, daylight saving time included.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from schedb.api.context import json_response
from schedb.api.problems import Problem, read_json
from schedb.clock import wall_ms
from schedb.describe import describe
from schedb.schedule import AT_MS_MAX, Schedule, ScheduleError, parse_schedule, parse_timezone
from schedb.timefmt import ms_to_rfc3339, rfc3339_to_ms

FIELDS = ("expression", "timezone", "count", "start")
COUNT_DEFAULT = 5
COUNT_MAX = 100
LAST_MS = AT_MS_MAX  # RFC 3339 ends with the year 9999: the list stops there


async def preview(request: web.Request) -> web.Response:
    """The first `count` fire instants at or after `start` (default now), in UTC and in the zone's time."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise Problem(422, "Invalid preview", 'send {"expression": …}', kind="invalid",
                      errors=[{"field": "", "message": "must be an object"}])
    errors = [{"field": k, "message": "unknown field"} for k in body if k not in FIELDS]
    timezone = body.get("timezone", "UTC")
    try:
        parse_timezone(timezone)
    except ScheduleError as exc:
        errors.append({"field": "timezone", "message": f"{exc}; an IANA name such as Europe/Berlin"})
        timezone = "UTC"  # still check the expression
    schedule = _schedule(body.get("expression"), timezone, errors)
    count = body.get("count", COUNT_DEFAULT)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= COUNT_MAX:
        errors.append({"field": "count", "message": f"an integer from 1 to {COUNT_MAX}"})
    start_ms = _start_ms(body["start"]) if "start" in body else wall_ms()
    if start_ms is None:
        errors.append({"field": "start", "message": "an RFC 3339 time with an offset, from 1970 to 9999"})
    if errors or schedule is None or start_ms is None:
        raise Problem(422, "Invalid preview", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      kind="invalid", errors=errors)
    # Off the event loop: croniter can take a few hundred ms for one answer (a per-second
    # expression going through a skipped hour steps second by second), and executor timers share the loop.
    found = await asyncio.get_running_loop().run_in_executor(None, instants, schedule, start_ms, count)
    return json_response({
        "expression": schedule.expression, "timezone": schedule.timezone, "description": describe(schedule.expression),
        "start": ms_to_rfc3339(start_ms), "next": [ms_to_rfc3339(ms) for ms, _ in found],
        "next_local": [local.isoformat(timespec="milliseconds") for _, local in found]}, 200)


def _schedule(expression: Any, timezone: str, errors: list[dict[str, str]]) -> Schedule | None:
    if not isinstance(expression, str):
        errors.append({"field": "expression", "message": "required, a schedule such as */5 * * * * or @every 10s"})
        return None
    try:
        return parse_schedule(expression, timezone)
    except ScheduleError as exc:
        errors.append({"field": "expression", "message": str(exc)})
        return None


def _start_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        ms = rfc3339_to_ms(value)
    except (ValueError, OverflowError):
        return None
    return ms if 0 <= ms <= LAST_MS else None


def instants(schedule: Schedule, start_ms: int, count: int) -> list[tuple[int, datetime]]:
    """Up to count (ms, local time) pairs; fewer when the schedule ends (`@at`) or reaches the year 9999."""
    tz = ZoneInfo(schedule.timezone)
    out: list[tuple[int, datetime]] = []
    after_ms = start_ms - 1
    while len(out) < count:
        try:
            next_ms = schedule.next_after(after_ms)
            if next_ms is None or next_ms > LAST_MS:
                break
            utc = datetime.fromtimestamp(next_ms // 1000, tz=UTC).replace(microsecond=next_ms % 1000 * 1000)
            out.append((next_ms, utc.astimezone(tz)))
        except (OverflowError, ValueError):  # near the end of datetime's range (year 9999, local or UTC)
            break
        after_ms = next_ms
    return out
