"""Schedule parsing and next-fire computation, DST included."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from schedb import schedule as schedule_module
from schedb.schedule import ScheduleError, parse_schedule
from schedb.timefmt import ms_to_rfc3339, rfc3339_to_ms


def _next_n(expression: str, timezone: str, start: str, n: int) -> list[str]:
    schedule = parse_schedule(expression, timezone)
    t = rfc3339_to_ms(start)
    out = []
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(ms_to_rfc3339(t))
    return out


def test_five_field_cron_in_utc() -> None:
    assert _next_n("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z", 3) == [
        "2026-01-01T00:15:00.000Z", "2026-01-01T00:30:00.000Z", "2026-01-01T00:45:00.000Z"]


def test_six_field_cron_has_seconds_first() -> None:
    # 2026-11-27 is a Friday, 2026-11-28 a Saturday.
    assert _next_n("31 10-11 1 * * MON-FRI", "UTC", "2026-11-27T01:10:40Z", 3) == [
        "2026-11-27T01:11:31.000Z", "2026-11-30T01:10:31.000Z", "2026-11-30T01:11:31.000Z"]


def test_aliases() -> None:
    assert _next_n("@hourly", "UTC", "2026-01-01T00:00:00Z", 1) == ["2026-01-01T01:00:00.000Z"]
    assert _next_n("@daily", "Europe/Berlin", "2026-06-01T12:00:00Z", 1) == ["2026-06-01T22:00:00.000Z"]
    assert _next_n("@weekly", "UTC", "2026-11-24T00:00:00Z", 1) == ["2026-11-29T00:00:00.000Z"]


def test_every_is_aligned_to_the_epoch_and_strictly_after() -> None:
    assert _next_n("@every 1m30s", "UTC", "2026-01-01T00:00:00Z", 2) == [
        "2026-01-01T00:01:30.000Z", "2026-01-01T00:03:00.000Z"]
    every = parse_schedule("@every 1s")
    assert every.next_after(1000) == 2000 and every.next_after(1999) == 2000


def test_at_fires_once() -> None:
    at = parse_schedule("@at 2026-12-01T10:00:00+01:00")
    assert at.next_after(0) == rfc3339_to_ms("2026-12-01T09:00:00Z")
    assert at.next_after(at.at_ms) is None


@pytest.mark.parametrize("text", [
    "2026-W49-5T10:00:00Z",  # an ISO 8601 week date: Friday of week 49, which fromisoformat reads
    "2026W495T10:00:00Z",
    "2026-W49T10:00:00Z",
    "20261201T100000Z",  # basic format
    "2026-12-01T10Z",  # hours alone
    "2026-12-01T10:00Z",  # no seconds
    "2026-12-01T10:00:00,5Z",  # a comma before the fraction
    "2026-12-01T10:00:00+0100",  # an offset without its colon
    "2026-12-01T10:00:00+01",
    "\uff12\uff10\uff12\uff16-12-01T10:00:00Z",  # fullwidth digits
])
def test_at_takes_rfc_3339_and_nothing_else_iso_8601_has(text: str) -> None:
    with pytest.raises(ScheduleError, match="RFC 3339"):
        parse_schedule(f"@at {text}")


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.000Z"),
    ("2026-12-01t10:00:00z", "2026-12-01T10:00:00.000Z"),
    ("2026-12-01 10:00:00Z", "2026-12-01T10:00:00.000Z"),  # RFC 3339 allows a space for the T
    ("2026-12-01T10:00:00.25-02:30", "2026-12-01T12:30:00.250Z"),
])
def test_at_takes_every_rfc_3339_form(text: str, utc: str) -> None:
    assert ms_to_rfc3339(parse_schedule(f"@at {text}").at_ms) == utc


def test_spring_forward_fires_at_first_valid_instant() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    assert _next_n("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3) == [
        "2026-03-28T01:30:00.000Z", "2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"]


def test_fall_back_fires_a_fixed_hour_once() -> None:
    # Europe/Berlin repeats 02:00-03:00 on 2026-10-25.
    assert _next_n("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2) == [
        "2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]


def test_fall_back_keeps_wildcard_hours_running_through_both_passes() -> None:
    fires = _next_n("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3)
    assert fires == ["2026-10-24T23:30:00.000Z", "2026-10-25T00:30:00.000Z", "2026-10-25T01:30:00.000Z"]


@pytest.mark.parametrize(("expression", "timezone", "message"), [
    ("* * *", "UTC", "5 fields"),
    ("* * * * * * *", "UTC", "5 fields"),
    ("61 * * * *", "UTC", "invalid cron"),
    ("0 0 30 2 *", "UTC", "never fires"),
    ("@sometimes", "UTC", "unknown alias"),
    ("@every 0s", "UTC", "between 1s"),
    ("@every 5x", "UTC", "duration"),
    ("@at tomorrow", "UTC", "RFC 3339"),
    ("@at 2026-12-01T10:00:00", "UTC", "RFC 3339"),
    ("* * * * *", "Mars/Base", "unknown timezone"),
    ("* * * * *", "../../etc/passwd", "unknown timezone"),
    ("* * * * *", "localtime", "unknown timezone"),  # the host's setting: nodes could disagree
    ("", "UTC", "1..200"),
])
def test_invalid_schedules_explain_themselves(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expression, timezone)


CRON_FIELD = st.sampled_from(["*", "*/5", "0", "1-10", "3,7,11", "*/2"])
TIMEZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
INSTANTS = st.integers(min_value=rfc3339_to_ms("2000-01-01T00:00:00Z"), max_value=rfc3339_to_ms("2040-01-01T00:00:00Z"))


@settings(max_examples=200, deadline=None)
@given(minute=CRON_FIELD, hour=CRON_FIELD, timezone=TIMEZONES, after_ms=INSTANTS)
def test_cron_next_is_later_and_matches_the_expression(minute: str, hour: str, timezone: str, after_ms: int) -> None:
    schedule = parse_schedule(f"{minute} {hour} * * *", timezone)
    first = schedule.next_after(after_ms)
    assert first is not None and first > after_ms and first % 60_000 == 0
    local = datetime.fromtimestamp(first / 1000, tz=UTC).astimezone(ZoneInfo(timezone))
    assert croniter.match(schedule.cron, local.replace(tzinfo=None)) or _in_dst_gap(first, timezone)
    assert schedule.next_after(first) > first


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(1, 7 * 86_400), after_ms=INSTANTS)
def test_every_next_is_the_following_multiple(seconds: int, after_ms: int) -> None:
    schedule = parse_schedule(f"@every {seconds}s")
    nxt = schedule.next_after(after_ms)
    assert nxt % (seconds * 1000) == 0 and after_ms < nxt <= after_ms + seconds * 1000


def _in_dst_gap(ms: int, timezone: str) -> bool:
    """A fire moved forward out of a skipped hour does not match its own wall time."""
    tz = ZoneInfo(timezone)
    before = datetime.fromtimestamp((ms - 3_600_000) / 1000, tz=UTC).astimezone(tz)
    now = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz)
    return before.utcoffset() != now.utcoffset()


# Richer fields for the remembered spans: day of month and weekday rules (L, #) where croniter's
# search is least obvious, six-field expressions (seconds first).
SECOND_FIELD = st.sampled_from(["0", "*/15", "5,35", "*"])
DAY_FIELD = st.sampled_from(["*", "1", "L", "15-20", "*/10", "29", "31"])
MONTH_FIELD = st.sampled_from(["*", "2", "1-6", "*/3", "12"])
WEEKDAY_FIELD = st.sampled_from(["*", "1", "MON-FRI", "5L", "1#2", "0,6", "3#5"])


@settings(max_examples=300, deadline=None)
@given(seconds=st.none() | SECOND_FIELD, minute=CRON_FIELD, hour=CRON_FIELD, day=DAY_FIELD, month=MONTH_FIELD,
       weekday=WEEKDAY_FIELD, start_ms=INSTANTS, steps=st.lists(st.floats(-1.0, 1.2), min_size=1, max_size=12))
def test_a_remembered_utc_answer_equals_the_answer_computed_afresh(
        seconds: str | None, minute: str, hour: str, day: str, month: str, weekday: str, start_ms: int,
        steps: list[float]) -> None:
    """Replicas apply next_after with different histories of questions (the API asks too, and a
    restart forgets): a remembered span must give exactly what croniter gives from scratch, for
    every question inside and at the edges of the span."""
    expression = " ".join(f for f in (seconds, minute, hour, day, month, weekday) if f is not None)
    try:
        schedule = parse_schedule(expression, "UTC")
    except ScheduleError:
        return  # not an expression schedb takes
    schedule_module._cron_spans.clear()
    after_ms = start_ms
    for step in steps:
        schedule_module._iterators.__dict__.pop("cache", None)  # a croniter of its own: truly fresh
        fresh = schedule_module._cron_next(schedule, after_ms)
        assert schedule.next_after(after_ms) == fresh
        if fresh is None:
            return
        # The next question: inside the span (a fraction of it), at its end, just past it, or
        # before where the span began (an older instant: a catch-up, another replica's question).
        after_ms += int((fresh - after_ms) * step) or 1
