"""Daylight saving time, pinned: what a cron job does when its wall-clock time is skipped or repeated.

The contract (README, "Daylight saving time"): with a fixed hour field, a daily job in a repeated
hour fires once (the first pass); in a skipped hour it fires at the first valid instant after it,
the end of the gap. With `*` in the hour field the expression counts elapsed time: skipped wall
times do not fire, a repeated hour fires in both passes.

Europe/Berlin: 2026-03-29 and 2027-03-28 jump 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 and
2027-10-31 go 03:00 CEST -> 02:00 CET (01:00Z), so 02:00-03:00 happens twice.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from schedb.schedule import parse_schedule
from schedb.timefmt import ms_to_rfc3339, rfc3339_to_ms


def _fires(expression: str, timezone: str, start: str, n: int) -> list[str]:
    """The first n fire instants at or after start, as local RFC 3339 (the offset shows the pass)."""
    schedule = parse_schedule(expression, timezone)
    tz = ZoneInfo(timezone)
    t = rfc3339_to_ms(start) - 1
    out = []
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(datetime.fromtimestamp(t / 1000, tz=tz).isoformat())
    return out


# --- spring forward: 02:00-03:00 does not exist -----------------------------------------------------


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_spring_forward_2027_moves_the_skipped_time_to_the_end_of_the_gap(expression: str) -> None:
    assert _fires(expression, "Europe/Berlin", "2027-03-26T00:00:00Z", 5) == [
        "2027-03-26T02:30:00+01:00", "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",  # 02:30 does not exist: the first valid instant after it
        "2027-03-29T02:30:00+02:00", "2027-03-30T02:30:00+02:00"]


def test_spring_forward_2026_fires_at_0100_utc() -> None:
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    assert ms_to_rfc3339(schedule.next_after(rfc3339_to_ms("2026-03-28T12:00:00Z"))) == "2026-03-29T01:00:00.000Z"


def test_spring_forward_drops_the_seconds_of_a_skipped_time() -> None:
    # croniter alone answers 03:00:15 (it moves the wall time forward minute by minute).
    assert _fires("15 30 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00Z", 2) == [
        "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:15+02:00"]


def test_spring_forward_keeps_a_time_the_expression_names_after_the_gap() -> None:
    assert _fires("15 0 3 * * *", "Europe/Berlin", "2027-03-27T12:00:00Z", 2) == [
        "2027-03-28T03:00:15+02:00", "2027-03-29T03:00:15+02:00"]


def test_spring_forward_collapses_the_skipped_times_of_a_fixed_hour_into_one_fire() -> None:
    assert _fires("*/20 2 * * *", "Europe/Berlin", "2027-03-28T00:00:00Z", 3) == [
        "2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00", "2027-03-29T02:20:00+02:00"]


def test_spring_forward_skips_the_missing_hour_of_a_wildcard_hour() -> None:
    assert _fires("30 * * * *", "Europe/Berlin", "2027-03-28T00:00:00Z", 3) == [
        "2027-03-28T01:30:00+01:00", "2027-03-28T03:30:00+02:00", "2027-03-28T04:30:00+02:00"]


def test_spring_forward_gap_that_ends_off_the_hour() -> None:
    # Australia/Lord_Howe moves 02:00 -> 02:30 on 2026-10-04 (a half-hour shift).
    assert _fires("10 2 * * *", "Australia/Lord_Howe", "2026-10-02T12:00:00Z", 3) == [
        "2026-10-03T02:10:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:10:00+11:00"]


def test_spring_forward_in_new_york() -> None:
    assert _fires("30 2 * * *", "America/New_York", "2027-03-13T00:00:00Z", 3) == [
        "2027-03-13T02:30:00-05:00", "2027-03-14T03:00:00-04:00", "2027-03-15T02:30:00-04:00"]


# --- fall back: 02:00-03:00 happens twice ----------------------------------------------------------


def test_fall_back_2026_a_time_before_the_repeated_hour_fires_daily_25_hours_apart() -> None:
    assert _fires("30 1 * * *", "Europe/Berlin", "2026-10-23T00:00:00Z", 4) == [
        "2026-10-24T01:30:00+02:00", "2026-10-25T01:30:00+02:00",
        "2026-10-26T01:30:00+01:00", "2026-10-27T01:30:00+01:00"]


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
@pytest.mark.parametrize(("start", "day", "next_day"), [
    ("2026-10-23T00:00:00Z", "2026-10-25", "2026-10-26"), ("2027-10-29T00:00:00Z", "2027-10-31", "2027-11-01")])
def test_fall_back_a_time_in_the_repeated_hour_fires_once(expression: str, start: str, day: str,
                                                          next_day: str) -> None:
    fires = _fires(expression, "Europe/Berlin", start, 4)
    assert fires[2:] == [f"{day}T02:30:00+02:00", f"{next_day}T02:30:00+01:00"]  # not {day}T02:30:00+01:00


def test_fall_back_a_fixed_hour_fires_its_minutes_in_the_first_pass_only() -> None:
    assert _fires("*/20 2 * * *", "Europe/Berlin", "2026-10-25T00:00:00Z", 4) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:20:00+02:00", "2026-10-25T02:40:00+02:00",
        "2026-10-26T02:00:00+01:00"]


def test_fall_back_a_wildcard_hour_fires_through_both_passes() -> None:
    assert _fires("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 4) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:30:00+01:00"]


# --- catching up (misfire run_once uses last_at_or_before) agrees with next_after -------------------


@pytest.mark.parametrize(("expression", "at", "latest"), [
    ("30 2 * * *", "2026-10-25T01:45:00Z", "2026-10-25T00:30:00.000Z"),  # not the second pass, 01:30Z
    ("30 2 * * *", "2027-03-28T01:10:00Z", "2027-03-28T01:00:00.000Z"),
    ("15 30 2 * * *", "2027-03-28T01:00:10Z", "2027-03-28T01:00:00.000Z"),  # before croniter's 03:00:15
    ("15 30 2 * * *", "2027-03-28T00:59:59Z", "2027-03-27T01:30:15.000Z"),
])
def test_last_at_or_before_names_the_instant_next_after_fires(expression: str, at: str, latest: str) -> None:
    assert ms_to_rfc3339(parse_schedule(expression, "Europe/Berlin").last_at_or_before(rfc3339_to_ms(at))) == latest


# --- properties around real transitions ------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago",
         "Europe/Dublin"]
FIXED_HOURS = ["0", "1", "2", "3", "1-3", "2,5", "0-4/2"]
ANY_HOURS = ["*", "*/2"]


@lru_cache(maxsize=64)
def _transitions(timezone: str, year: int) -> tuple[int, ...]:
    """Unix seconds of the zone's offset changes in the year (hourly scan, then to the second)."""
    tz = ZoneInfo(timezone)
    t = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    out = []
    while t < end:
        if _offset(tz, t) != _offset(tz, t + 3600):
            low, high = t, t + 3600
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if _offset(tz, mid) == _offset(tz, low) else (low, mid)
            out.append(high)
        t += 3600
    return tuple(out)


def _offset(tz: ZoneInfo, unix_s: int) -> timedelta | None:
    return datetime.fromtimestamp(unix_s, tz=UTC).astimezone(tz).utcoffset()


@st.composite
def _near_a_transition(draw: st.DrawFn) -> tuple[str, int]:
    timezone = draw(st.sampled_from(ZONES))
    transitions = _transitions(timezone, draw(st.integers(2026, 2030)))
    at_s = draw(st.sampled_from(transitions)) + draw(st.integers(-6 * 3600, 6 * 3600))
    return timezone, at_s * 1000 + draw(st.integers(0, 999))


@settings(max_examples=300, deadline=None)
@given(where=_near_a_transition(), second=st.sampled_from(["", "0 ", "15 ", "*/20 "]),
       minute=st.sampled_from(["0", "30", "45", "*/20", "59", "10-50/10"]),
       hour=st.sampled_from(FIXED_HOURS + ANY_HOURS))
def test_fires_near_a_transition_keep_the_contract(where: tuple[str, int], second: str, minute: str,
                                                   hour: str) -> None:
    timezone, after_ms = where
    tz = ZoneInfo(timezone)
    schedule = parse_schedule(f"{second}{minute} {hour} * * *", timezone)
    fires = [schedule.next_after(after_ms)]
    while len(fires) < 2 or (len(fires) < 40 and fires[-1] < after_ms + 14 * 3_600_000):
        fires.append(schedule.next_after(fires[-1]))
    assert fires[0] > after_ms and fires == sorted(set(fires))
    walls = []
    for ms in fires:
        local = datetime.fromtimestamp(ms / 1000, tz=tz)
        walls.append(local.replace(tzinfo=None))
        named = croniter.match(schedule.cron, walls[-1], second_at_beginning=bool(second))
        gap_end = _offset(tz, ms // 1000 - 1) is not None and _offset(tz, ms // 1000 - 1) < local.utcoffset()
        # every fire is a wall time the expression names, or (fixed hour) the end of a gap
        assert named or (gap_end and hour in FIXED_HOURS), ms_to_rfc3339(ms)
    if hour in FIXED_HOURS:
        assert len(set(walls)) == len(walls)  # a repeated wall time fires once
    # catching up names the same instants
    latest = schedule.last_at_or_before(after_ms)
    assert latest is not None and latest <= after_ms
    assert schedule.next_after(latest) == fires[0] and schedule.next_after(latest - 1) == latest
    assert schedule.last_at_or_before(fires[1] - 1) == fires[0]


def _expand(field: str, low: int, high: int) -> set[int]:
    """The values of a simple cron field (`*`, `a`, `a-b`, `,` lists, `/step`)."""
    out: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        first, last = (low, high) if span == "*" else (int(span.split("-")[0]), int(span.split("-")[-1]))
        out.update(range(first, high + 1 if step and "-" not in span else last + 1, int(step or 1)))
    return out


@settings(max_examples=300, deadline=None)
@given(where=_near_a_transition(), seconds_field=st.booleans(),
       minute=st.sampled_from(["0", "30", "45", "*/20", "59", "10-50/10", "*"]),
       hour=st.sampled_from(FIXED_HOURS + ANY_HOURS))
def test_fires_near_a_transition_are_exactly_the_contracts(where: tuple[str, int], seconds_field: bool, minute: str,
                                                           hour: str) -> None:
    """Against a model of the contract, minute by minute over 14 hours around a transition."""
    timezone, after_ms = where
    tz = ZoneInfo(timezone)
    schedule = parse_schedule(("0 " if seconds_field else "") + f"{minute} {hour} * * *", timezone)
    minutes, hours, fixed = _expand(minute, 0, 59), _expand(hour, 0, 23), hour in FIXED_HOURS
    end_ms = after_ms + 14 * 3_600_000
    expected = set()
    for unix_s in range(after_ms // 60_000 * 60 + 60, end_ms // 1000 + 1, 60):
        local = datetime.fromtimestamp(unix_s, tz=UTC).astimezone(tz)
        first_pass = local.replace(fold=0).utcoffset() == local.utcoffset()
        if local.minute in minutes and local.hour in hours and (first_pass or not fixed):
            expected.add(unix_s * 1000)
    for change_s in _transitions(timezone, datetime.fromtimestamp(after_ms / 1000, tz=UTC).year):
        old, new = _offset(tz, change_s - 1), _offset(tz, change_s)
        if fixed and after_ms < change_s * 1000 <= end_ms and old is not None and new is not None and new > old:
            # a gap: its skipped wall times fire once, at its end
            wall_end = datetime.fromtimestamp(change_s, tz=UTC).astimezone(tz).replace(tzinfo=None)
            skipped = [wall_end - timedelta(minutes=m) for m in range(1, int((new - old).total_seconds()) // 60 + 1)]
            if any(w.minute in minutes and w.hour in hours for w in skipped):
                expected.add(change_s * 1000)
    fires, t = [], after_ms
    while (t := schedule.next_after(t)) is not None and t <= end_ms:
        fires.append(t)
    assert [ms_to_rfc3339(f) for f in fires] == [ms_to_rfc3339(f) for f in sorted(expected)]
    for earlier, later in itertools.pairwise(fires):
        assert schedule.last_at_or_before(later - 1) == earlier and schedule.last_at_or_before(later) == later
