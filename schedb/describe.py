"""Schedule expressions in words, for `POST /api/v1/schedules/preview`.

Cron goes through cron-descriptor, in English with a 24-hour clock whatever the
host's locale (every node answers alike); an alias is described by the cron it
stands for. `@every` and `@at` are described here:

    31 10-15 1 * * MON-FRI  At 31 seconds past the minute, minutes 10 through 15 past the hour,
                            at 01:00, Monday through Friday
    @daily                  At 00:00
    @every 90s              Every 1 minute 30 seconds
    @at 2026-12-01T11:00:00+01:00   Once at 2026-12-01T10:00:00.000Z

The words describe wall-clock times; the schedule's timezone (and its daylight
saving rules, see schedb.schedule) says which wall clock.
"""

from __future__ import annotations

from functools import lru_cache

from cron_descriptor import ExpressionDescriptor, Options

from schedb.schedule import parse_schedule
from schedb.timefmt import ms_to_rfc3339

_UNITS = (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000))


@lru_cache(maxsize=1024)
def describe(expression: str) -> str:
    """The expression in words; raises schedb.schedule.ScheduleError when it is not valid."""
    schedule = parse_schedule(expression)
    if schedule.kind == "every":
        return f"Every {duration_in_words(schedule.every_ms)}"
    if schedule.kind == "at":
        return f"Once at {ms_to_rfc3339(schedule.at_ms)}"
    return describe_cron(schedule.cron)


def describe_cron(cron: str) -> str:
    """A 5-field cron, or a 6-field one with seconds first, in words."""
    # cron-descriptor reads six fields as seconds first only when the last does not look like
    # a year and no day field is "?"; seven fields (seconds ... year) are always seconds first.
    text = cron if len(cron.split()) == 5 else f"{cron} *"
    options = Options(locale_code="en_US", use_24hour_time_format=True)
    try:
        return ExpressionDescriptor(text, options).get_description()
    except Exception:  # croniter takes forms cron-descriptor does not know: words are a courtesy, not a check
        return f"Cron {cron}"


def duration_in_words(ms: int) -> str:
    """90_000 -> "1 minute 30 seconds"; whole seconds (an `@every` interval is at least 1 s)."""
    parts = []
    for name, unit_ms in _UNITS:
        count, ms = divmod(ms, unit_ms)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"
