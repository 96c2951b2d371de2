"""Schedule expressions in words (schedb.describe)."""

from __future__ import annotations

import locale

import pytest

from schedb.describe import describe, describe_cron, duration_in_words
from schedb.schedule import ScheduleError


@pytest.mark.parametrize(("expression", "words"), [
    ("30 2 * * *", "At 02:30"),
    ("*/5 * * * *", "Every 5 minutes"),
    ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
    ("0 0 1 * MON", "At 00:00, on day 1 of the month, or on Monday"),  # croniter's day_or, too
    ("0 0 * * 7", "At 00:00, only on Sunday"),
    # six fields: seconds first, as the scheduler reads them
    ("0 30 2 * * *", "At 02:30"),
    ("*/10 * * * * *", "Every 10 seconds"),
    ("31 10-15 1 * * MON-FRI", "At 31 seconds past the minute, minutes 10 through 15 past the hour, at 01:00, "
                               "Monday through Friday"),
    ("0 0 12 ? * MON", "At 12:00, only on Monday"),  # "?" does not make cron-descriptor read a year
    # aliases: the cron they stand for
    ("@hourly", "Every hour"),
    ("@daily", "At 00:00"),
    ("@MIDNIGHT", "At 00:00"),
    ("@weekly", "At 00:00, only on Sunday"),
    ("@monthly", "At 00:00, on day 1 of the month"),
    ("@yearly", "At 00:00, on day 1 of the month, only in January"),
    # written here
    ("@every 1m30s", "Every 1 minute 30 seconds"),
    ("@every 90s", "Every 1 minute 30 seconds"),
    ("@every 1s", "Every 1 second"),
    ("@every 2d3h", "Every 2 days 3 hours"),
    ("@at 2026-12-01T11:00:00+01:00", "Once at 2026-12-01T10:00:00.000Z"),
])
def test_describe(expression: str, words: str) -> None:
    assert describe(expression) == words


def test_words_do_not_depend_on_the_hosts_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locale, "getlocale", lambda *_: ("de_DE", "UTF-8"))
    assert describe_cron("30 14 * * *") == "At 14:30"  # not "Um 14:30", not "At 02:30 PM"


def test_a_form_cron_descriptor_does_not_know_falls_back_to_the_expression() -> None:
    assert describe_cron("0 0 * * R") == "Cron 0 0 * * R"  # R: croniter's random day of the week


def test_an_invalid_expression_is_refused() -> None:
    with pytest.raises(ScheduleError, match="invalid cron"):
        describe("61 * * * *")


def test_duration_in_words() -> None:
    assert duration_in_words(86_400_000 + 60_000) == "1 day 1 minute"
    assert duration_in_words(7_200_000) == "2 hours"
