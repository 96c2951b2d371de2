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

Daylight saving time, for a cron hour field without `*` (`30 2 * * *`, `0 30 2 * * *`,
`*/20 2 * * *`):
- a wall-clock time that does not exist (spring forward) fires at the first valid
  instant after it, the end of the gap: 02:30 on a day that jumps from 02:00 to
  03:00 fires at 03:00 (and so does 02:30:15: the seconds do not carry over);
  several skipped times of one day collapse into that one fire;
- a wall-clock time that happens twice (fall back) fires once, at its first
  occurrence.
Expressions with `*` in the hour field (`30 * * * *`, `*/10 */2 * * *`) describe
elapsed time instead: they skip the wall times that do not exist and fire through
both passes of a repeated hour. croniter does most of this itself (it moves a
skipped fixed-hour time forward minute by minute); this module drops croniter's
second pass of a repeated fixed hour, moves a shifted time back to the exact end
of the gap, and finds the second pass croniter jumps over when a clock goes back
by half an hour or at :45 (Australia/Lord_Howe, Pacific/Chatham).
"""

from __future__ import annotations

import re
import threading
import zoneinfo
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from schedb.timefmt import rfc3339_to_ms

# Time zones come from the pinned tzdata package only, never from the host's database: a host's
# /usr/share/zoneinfo has other versions and other names (posix/*, right/*), so two nodes would
# accept different zones or compute different fire times, and their states would differ.
zoneinfo.reset_tzpath(to=[])
ZoneInfo.clear_cache()

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
# Bound on the DST corrections in one next_after() or last_at_or_before() call (each one
# moves past a whole repeated period or a gap, so one or two are ever needed).
DST_STEPS_MAX = 8

_EVERY_PART = re.compile(r"(\d+)(d|h|m|s)")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
# RFC 3339's date-time, and only it: datetime.fromisoformat also reads ISO 8601's week dates
# (2026-W49-5), basic format (20261201T100000Z), hours alone and "+0100", which the API never promised.
_AT_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


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
        return _cron_next_remembered(self, after_ms)

    def last_at_or_before(self, at_ms: int) -> int | None:
        """The latest fire instant <= at_ms, or None (used to catch up after a long outage)."""
        if self.kind == "every":
            return at_ms // self.every_ms * self.every_ms
        if self.kind == "at":
            return self.at_ms if self.at_ms <= at_ms else None
        return _cron_last(self, at_ms)

    def count_between(self, start_ms: int, end_ms: int | None) -> int | None:
        """How many fire instants lie in [start_ms, end_ms) (None: no end), counted without walking
        them; None when only a walk could tell (cron: one croniter evaluation per instant)."""
        if self.kind == "every" and end_ms is not None:
            # the multiples of every_ms in [start, end): ceil(end / every) - ceil(start / every)
            first_index, end_index = -(-start_ms // self.every_ms), -(-end_ms // self.every_ms)
            return max(0, end_index - first_index)
        if self.kind == "at":
            return int(start_ms <= self.at_ms and (end_ms is None or self.at_ms < end_ms))
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
        if not _AT_TIME.fullmatch(spec):
            raise ValueError(f"not an RFC 3339 date-time: {spec!r}")
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


# The first fire after t is a step function of t: once next_after(t) = N is known, every t' from
# t's second up to N has the answer N. Remembering that span per expression turns the common
# questions (a job's next fire after each of its fires; a bulk create of jobs that share an
# expression, asked at one instant) into a dict lookup instead of croniter's ~60 µs.
# The state machine asks these while applying, and a remembered answer depends on what this node
# asked before: it is only used where it provably equals the answer computed afresh. That is
# UTC, where croniter alone answers (tests/unit/test_schedule.py checks it against the uncached
# answers, property-based); zones with daylight saving go through the gap and repeated-hour
# rules above, and are computed afresh each time.
CRON_SPANS_MAX = 4096
_cron_spans: dict[str, tuple[int, int]] = {}  # UTC cron -> (from ms, its first fire after that)


def _cron_next_remembered(schedule: Schedule, after_ms: int) -> int | None:
    if schedule.timezone != "UTC":
        return _cron_next(schedule, after_ms)
    span = _cron_spans.get(schedule.cron)
    if span is not None and span[0] <= after_ms < span[1]:
        return span[1]
    following = _cron_next(schedule, after_ms)
    if following is not None:
        if len(_cron_spans) >= CRON_SPANS_MAX:
            _cron_spans.clear()  # the tick thread and the event loop share it: no eviction order to keep
        _cron_spans[schedule.cron] = (after_ms // 1000 * 1000, following)
    return following


def _cron_next(schedule: Schedule, after_ms: int) -> int | None:
    tz = ZoneInfo(schedule.timezone)
    # croniter works in whole seconds: start from the second that contains after_ms,
    # so the result is strictly greater than after_ms.
    start = datetime.fromtimestamp(after_ms // 1000, tz=UTC).astimezone(tz)
    it = _iterator(schedule.cron)
    it.set_current(start, force=True)
    for _ in range(DST_STEPS_MAX):
        try:
            nxt: datetime = it.get_next(datetime)
        except CroniterError:
            return None
        if schedule.hour_fixed and _is_second_pass(nxt):
            # The repeated period fired in its first pass: go on from its end, in one step
            # however many times it names (`* 2 * * *` names 60).
            it.set_current(_aware(_second_pass_span(nxt)[1] - 1, tz), force=True)
            continue
        gap_end_s = _moved_out_of_gap(schedule.cron, nxt)
        if gap_end_s is None:
            passed_over = None if schedule.hour_fixed else _second_pass_passed_over(schedule.cron, start, nxt)
            return int(nxt.timestamp()) * 1000 if passed_over is None else passed_over
        gap_end = _aware(gap_end_s, tz)
        if gap_end_s * 1000 > after_ms and (schedule.hour_fixed or _names(schedule.cron, gap_end)):
            return gap_end_s * 1000
        # `*` in the hour field: a skipped wall time does not fire; go on from the gap's end.
        it.set_current(gap_end, force=True)
    return None


def _cron_last(schedule: Schedule, at_ms: int) -> int | None:
    tz = ZoneInfo(schedule.timezone)
    it = croniter(schedule.cron, _EPOCH, second_at_beginning=len(schedule.cron.split(" ")) == 6,
                  max_years_between_matches=CRON_SEARCH_YEARS_MAX)
    cursor_s = at_ms // 1000 + 1  # get_prev() answers instants before the cursor
    latest: int | None = None
    for _ in range(DST_STEPS_MAX):
        cursor = _aware(cursor_s, tz)
        it.set_current(cursor, force=True)
        try:
            prev: datetime = it.get_prev(datetime)
        except CroniterError:
            break
        prev_s = int(prev.timestamp())
        if _is_second_pass(cursor) and (schedule.hour_fixed or prev_s < _second_pass_span(cursor)[0]):
            # croniter goes back in wall-clock time: from inside a repeated period it passes over the
            # first pass's later wall times. Look again from the end of the first pass.
            cursor_s = _second_pass_span(cursor)[0] - 1
            continue
        if schedule.hour_fixed and _is_second_pass(prev):
            cursor_s = _second_pass_span(prev)[0] - 1
            continue
        gap_end_s = _moved_out_of_gap(schedule.cron, prev)
        if gap_end_s is None or schedule.hour_fixed:
            latest = (prev_s if gap_end_s is None else gap_end_s) * 1000
            break
        cursor_s = prev_s  # `*` in the hour field: a skipped wall time does not fire
    # next_after() is the authority on which instants fire: a time moved to the end of a DST gap
    # can lie before croniter's own answer, and the cursor above leaves out the last second of a
    # first pass.
    probe = at_ms - 60_000 if latest is None else latest
    for _ in range(DST_STEPS_MAX):
        following = _cron_next_remembered(schedule, probe)
        if following is None or following > at_ms:
            break
        latest = probe = following
    return latest


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


def _aware(unix_s: int, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC).astimezone(tz)


def _names(cron: str, dt: datetime) -> bool:
    """True when the expression names dt's wall-clock time."""
    return bool(croniter.match(cron, dt.replace(tzinfo=None), second_at_beginning=len(cron.split(" ")) == 6,
                               precision_in_seconds=1))


def _moved_out_of_gap(cron: str, dt: datetime) -> int | None:
    """The end of the DST gap (Unix seconds) when croniter moved dt out of one, else None.

    croniter moves a wall time that does not exist forward in whole minutes until it exists:
    `15 30 2 * * *` lands on 03:00:15 when 02:00-03:00 is skipped. The first valid instant
    after the skipped time is the end of the gap, 03:00:00."""
    unix_s = int(dt.timestamp())
    offset = dt.utcoffset()
    before = _aware(unix_s - 60, dt.tzinfo).utcoffset()
    if offset is None or before is None or before >= offset or _names(cron, dt):
        return None  # no gap ended within the minute before (one offset lookup), or a time of its own
    return _offset_change(unix_s - 60, unix_s, dt.tzinfo)


def _offset_change(low: int, high: int, tz: tzinfo | None) -> int:
    """The first second of high's UTC offset, given that low (< high) has another one."""
    offset = _aware(high, tz).utcoffset()
    while high - low > 1:
        mid = (low + high) // 2
        if _aware(mid, tz).utcoffset() == offset:
            high = mid
        else:
            low = mid
    return high


def _second_pass_passed_over(cron: str, start: datetime, nxt: datetime) -> int | None:
    """The first time of a repeated period's second pass between start and nxt, in ms, if croniter
    passed over it: going forward from the first pass it can jump past the second one when the
    clock goes back by other than a whole hour at a whole hour (Australia/Lord_Howe, Pacific/Chatham)."""
    offset_before, offset_after = start.utcoffset(), nxt.utcoffset()
    if offset_before is None or offset_after is None or offset_after >= offset_before:
        return None  # no clock went back in between: the common case
    tz = nxt.tzinfo
    change_s = _offset_change(int(start.timestamp()), int(nxt.timestamp()), tz)
    repeat = _aware(change_s - 1, tz).utcoffset() - _aware(change_s, tz).utcoffset()  # type: ignore[operator]
    wall = _aware(change_s, tz).replace(tzinfo=None)  # where the second pass begins
    it = croniter(cron, wall - timedelta(seconds=1), second_at_beginning=len(cron.split(" ")) == 6,
                  max_years_between_matches=1)  # naive: wall-clock times only
    try:
        candidate: datetime = it.get_next(datetime)
    except CroniterError:
        return None
    if candidate >= wall + repeat:
        return None
    ms = int(candidate.replace(tzinfo=tz, fold=1).timestamp()) * 1000
    return ms if ms < int(nxt.timestamp()) * 1000 else None


def _second_pass_span(dt: datetime) -> tuple[int, int]:
    """[start, end) in Unix seconds of the second pass of the repeated wall-clock period holding dt."""
    repeat_s = int((dt.replace(fold=0).utcoffset() - dt.utcoffset()).total_seconds())  # type: ignore[operator]
    unix_s = int(dt.timestamp())
    start = _offset_change(unix_s - repeat_s, unix_s, dt.tzinfo)  # the first pass's twin of dt has the old offset
    return start, start + repeat_s


def _is_second_pass(dt: datetime) -> bool:
    """True when dt is the later of two instants with the same wall-clock time."""
    local = dt.replace(tzinfo=None)
    tz = dt.tzinfo
    first = local.replace(fold=0).replace(tzinfo=tz)
    second = local.replace(fold=1).replace(tzinfo=tz)
    return first.utcoffset() != second.utcoffset() and dt.utcoffset() == second.utcoffset()
