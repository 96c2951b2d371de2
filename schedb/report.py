"""Run reports: what a webhook's JSON answer may say about the work it did (issue 9).

An answer whose body is a JSON object may carry `items_processed`, `items_succeeded`,
`items_failed` (integers 0..2**53) and `message` (a string, kept to 200 characters).
The executor extracts them (`extract_report`, lenient: a bad field is dropped, never the
attempt); the state machine re-checks the row it gets (`clean_report`, strict: anything
but a well-formed report counts as none) and stores it with the execution. Pure functions:
`clean_report` runs inside apply.
"""

from __future__ import annotations

import json
from typing import Any

ITEM_FIELDS = ("items_processed", "items_succeeded", "items_failed")
REPORT_FIELDS = (*ITEM_FIELDS, "message")
ITEM_MAX = 2**53
MESSAGE_LEN_MAX = 200


def _item(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ITEM_MAX


def extract_report(body: bytes) -> dict[str, Any]:
    """The report in an answer's body, in field order; {} when there is none or it is unreadable."""
    if not body.lstrip().startswith(b"{"):
        return {}
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, cut at the read limit, too deep, huge ints
        return {}
    if not isinstance(answer, dict):
        return {}
    report: dict[str, Any] = {name: answer[name] for name in ITEM_FIELDS if _item(answer.get(name))}
    message = answer.get("message")
    if isinstance(message, str):
        # A lone surrogate ("\ud800" in the JSON) has no UTF-8 form: the log's msgpack would refuse it.
        report["message"] = message[:MESSAGE_LEN_MAX].encode(errors="replace").decode()
    return report


def clean_report(value: Any) -> dict[str, Any]:
    """A copy of a well-formed report in field order; {} for anything else (deterministic)."""
    if not isinstance(value, dict) or not value or not set(value) <= set(REPORT_FIELDS):
        return {}
    message = value.get("message", "")
    if not isinstance(message, str) or len(message) > MESSAGE_LEN_MAX:
        return {}
    if not all(_item(value[name]) for name in ITEM_FIELDS if name in value):
        return {}
    return {name: value[name] for name in REPORT_FIELDS if name in value}
