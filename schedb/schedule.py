"""Schedule expressions: when does a job fire next?

Pure functions of (expression, timezone, instant): the state machine calls them
while applying commands, so they must be deterministic and must not read the
clock.

Supported forms:
- 5-field cron (`*/5 * * * *`) and 6-field cron with seconds first
  (`31 10-15 1 * * MON-FRI`), evaluated in the job's IANA timezone;
- aliases `@yearly @annually @monthly @weekly @daily @midnight @hourly`;
- `@every 10s`, `@every 1m30s` (units d h m s, at least 1 s), aligned to the
  Unix epoch so every node and every restart computes the same instants;
- `@at 2026-12-01T10:00:00Z`, a one-shot fire.

Daylight saving time: a wall-clock time that does not exist (spring forward)
fires at the first valid instant after it. A wall-clock time that happens twice
(fall back) fires once, at its first occurrence, when the cron hour field is
fixed (`30 2 * * *`); expressions with `*` in the hour field keep firing through
both passes of the repeated hour, since they describe elapsed time.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from schedb.timefmt import rfc3339_to_ms

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EXPRESSION_LEN_MAX = 200
AT_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EVERY_MS_MIN = 1000
EVERY_MS_MAX = 366 * 86_400_000
# A cron expression that matches nothing for this long is refused ("0 0 30 2 *").
CRON_SEARCH_YEARS_MAX = 5
# Bound on fold skips in one next_after() call (one per repeated hour).
FOLD_SKIPS_MAX = 8

_EVERY_PART = re.compile(r"(\d+)(d|h|m|s)")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}


class ScheduleError(ValueError):
    """The expression or timezone is not valid; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """A parsed expression. `next_after(t)` is the first fire instant > t, or None."""

    kind: str  # "cron" | "every" | "at"
    expression: str
    timezone: str
    cron: str = ""
    hour_fixed: bool = False
    every_ms: int = 0
    at_ms: int = 0

    def next_after(self, after_ms: int) -> int | None:
        if self.kind == "every":
            return (after_ms // self.every_ms + 1) * self.every_ms
        if self.kind == "at":
            return self.at_ms if self.at_ms > after_ms else None
        return _cron_next(self, after_ms)

    def last_at_or_before(self, at_ms: int) -> int | None:
        """The latest fire instant <= at_ms, or None (used to catch up after a long outage)."""
        if self.kind == "every":
            return at_ms // self.every_ms * self.every_ms
        if self.kind == "at":
            return self.at_ms if self.at_ms <= at_ms else None
        tz = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(at_ms // 1000 + 1, tz=UTC).astimezone(tz)
        it = croniter(self.cron, start, second_at_beginning=len(self.cron.split(" ")) == 6,
                      max_years_between_matches=CRON_SEARCH_YEARS_MAX)
        try:
            return int(it.get_prev(datetime).timestamp()) * 1000
        except CroniterError:
            return None


# Files of the zone database that stand for the host's own setting, not a zone: nodes on
# differently configured hosts would compute different fire times from them.
HOST_DEPENDENT_ZONES = frozenset({"localtime", "posixrules"})


def parse_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name or name in HOST_DEPENDENT_ZONES:
        raise ScheduleError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a directory such as "Europe"
        raise ScheduleError(f"unknown timezone {name!r}") from exc


@lru_cache(maxsize=4096)
def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """Parse and validate; raises ScheduleError with a message fit for an API user."""
    if not isinstance(expression, str):
        raise ScheduleError("schedule must be a string")
    text = " ".join(expression.split())
    if not text or len(text) > EXPRESSION_LEN_MAX:
        raise ScheduleError(f"schedule must be 1..{EXPRESSION_LEN_MAX} characters")
    parse_timezone(timezone)
    if text.startswith("@every"):
        return Schedule("every", text, timezone, every_ms=_parse_every(text[6:].strip()))
    if text.startswith("@at"):
        return Schedule("at", text, timezone, at_ms=_parse_at(text[3:].strip()))
    cron = ALIASES.get(text.lower(), text)
    if cron.startswith("@"):
        raise ScheduleError(f"unknown alias {text!r}; known: {', '.join(sorted(ALIASES))}, @every, @at")
    return _parse_cron(text, timezone, cron)


def _parse_every(spec: str) -> int:
    if not spec or _EVERY_PART.sub("", spec) != "":
        raise ScheduleError("@every needs a duration such as 10s, 5m or 1m30s")
    total_ms = sum(int(n) * _UNIT_MS[u] for n, u in _EVERY_PART.findall(spec))
    if not EVERY_MS_MIN <= total_ms <= EVERY_MS_MAX:
        raise ScheduleError("@every interval must be between 1s and 366d")
    return total_ms


def _parse_at(spec: str) -> int:
    try:
        at_ms = rfc3339_to_ms(spec)
    except ValueError as exc:
        raise ScheduleError("@at needs an RFC 3339 time such as 2026-12-01T10:00:00Z") from exc
    if at_ms > AT_MS_MAX:  # RFC 3339 (and the API's next_fire_at) ends with the year 9999
        raise ScheduleError("@at must be at most 9999-12-31T23:59:59Z in UTC")
    return at_ms


def _parse_cron(text: str, timezone: str, cron: str) -> Schedule:
    fields = cron.split(" ")
    if len(fields) not in (5, 6):
        raise ScheduleError("cron needs 5 fields, or 6 with seconds first")
    hour_field = fields[1] if len(fields) == 5 else fields[2]
    schedule = Schedule("cron", text, timezone, cron=cron, hour_fixed="*" not in hour_field)
    try:
        first = _cron_next(schedule, 0)
    except (CroniterError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ScheduleError(f"invalid cron expression {text!r}: {exc}") from exc
    if first is None:
        raise ScheduleError(f"cron expression {text!r} never fires")
    return schedule


def _cron_next(schedule: Schedule, after_ms: int) -> int | None:
    tz = ZoneInfo(schedule.timezone)
    # croniter works in whole seconds: start from the second that contains after_ms,
    # so the result is strictly greater than after_ms.
    start = datetime.fromtimestamp(after_ms // 1000, tz=UTC).astimezone(tz)
    it = _iterator(schedule.cron)
    it.set_current(start, force=True)
    for _ in range(FOLD_SKIPS_MAX):
        try:
            nxt: datetime = it.get_next(datetime)
        except CroniterError:
            return None
        if not (schedule.hour_fixed and _is_second_pass(nxt)):
            return int(nxt.timestamp()) * 1000
    return None


_EPOCH = datetime.fromtimestamp(0, UTC)  # any start: set_current() replaces it before each use
ITERATORS_PER_THREAD_MAX = 4096
_iterators = threading.local()  # the tick thread and the event loop both compute schedules


def _iterator(cron: str) -> croniter:
    """A croniter for the expression, parsed once per thread (parsing is most of its cost)."""
    cache: OrderedDict[str, croniter] | None = getattr(_iterators, "cache", None)
    if cache is None:
        cache = _iterators.cache = OrderedDict()
    it = cache.get(cron)
    if it is None:
        it = croniter(cron, _EPOCH, second_at_beginning=len(cron.split(" ")) == 6,
                      max_years_between_matches=CRON_SEARCH_YEARS_MAX)
        cache[cron] = it
        if len(cache) > ITERATORS_PER_THREAD_MAX:
            cache.popitem(last=False)
    else:
        cache.move_to_end(cron)
    return it


def _is_second_pass(dt: datetime) -> bool:
    """True when dt is the later of two instants with the same wall-clock time."""
    local = dt.replace(tzinfo=None)
    tz = dt.tzinfo
    first = local.replace(fold=0).replace(tzinfo=tz)
    second = local.replace(fold=1).replace(tzinfo=tz)
    return first.utcoffset() != second.utcoffset() and dt.utcoffset() == second.utcoffset()
