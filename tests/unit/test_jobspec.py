"""Job validation: every bad field is named; no input makes it fail any other way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedb.jobspec import InvalidJob, validate_job
from schedb.schedule import ScheduleError, parse_schedule

MINIMAL = {"id": "j", "schedule": "@hourly", "webhook": {"url": "http://127.0.0.1/h"}}


def test_defaults_are_filled_in() -> None:
    spec = validate_job(MINIMAL)
    assert spec["timezone"] == "UTC" and spec["paused"] is False and spec["priority"] == "normal"
    assert spec["webhook"] == {"url": "http://127.0.0.1/h", "method": "POST", "headers": {}, "body": None,
                               "timeout_s": 30.0, "signing_secret": None}
    assert validate_job(spec) == spec  # normalizing twice changes nothing (apply re-validates)


def test_all_bad_fields_are_reported_together() -> None:
    with pytest.raises(InvalidJob) as caught:
        validate_job({"id": "", "schedule": "nope", "timezone": "Nowhere/City", "webhook": {"url": "x"},
                      "priority": "urgent", "extra": 1})
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"id", "schedule", "timezone", "webhook.url", "priority", "extra"}


def test_body_size_is_bounded() -> None:
    with pytest.raises(InvalidJob, match=r"webhook.body"):
        validate_job({**MINIMAL, "webhook": {"url": "http://h/", "body": {"x": "y" * 70_000}}})


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=10)
KEYS = st.sampled_from(["id", "schedule", "timezone", "webhook", "retry", "paused", "tags", "priority", "x"])


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(KEYS, JSON))
def test_hostile_input_only_ever_raises_invalid_job(raw: dict[str, Any]) -> None:
    try:
        validate_job({**MINIMAL, **raw})
    except InvalidJob as exc:
        assert exc.errors and all(e["field"] is not None for e in exc.errors)


CRON_TOKENS = st.sampled_from(["*", "*/3", "0", "59", "1-5", "MON", "L", "#", "?", "H", "60", "-1", "1/0", "a",
                               "5,6", "JAN-DEC", "\u0663", "@every", "1s", "@at"])


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(CRON_TOKENS, min_size=1, max_size=7))
def test_garbage_schedules_only_ever_raise_schedule_error(tokens: list[str]) -> None:
    try:
        schedule = parse_schedule(" ".join(tokens), "UTC")
    except ScheduleError as exc:
        assert str(exc)  # a message fit for the API user
        return
    after_ms = 1_800_000_000_000
    next_ms = schedule.next_after(after_ms)
    assert next_ms is None or next_ms > after_ms


def test_body_nesting_is_bounded() -> None:
    deep: Any = 1
    for _ in range(33):
        deep = {"a": [deep]}
    with pytest.raises(InvalidJob, match=r"webhook\.body: must nest at most 32"):
        validate_job({"id": "x", "schedule": "@every 1s", "webhook": {"url": "http://a/", "body": deep}})


@pytest.mark.parametrize("schedule", ["R * * * *", "0 R(0-5) * * *", "0 1,r * * *"])
def test_random_cron_fields_are_refused(schedule: str) -> None:
    """croniter's R draws per process: every node would compute other fire times."""
    with pytest.raises(InvalidJob, match="random fields"):
        validate_job({"id": "x", "schedule": schedule, "webhook": {"url": "http://a/"}})
