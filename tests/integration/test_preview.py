"""POST /api/v1/schedules/preview against a real cluster (issue 9, acceptance 5): the instants a job
would fire at, daylight saving time included, and 422s naming the field at fault."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster
from schedb.timefmt import rfc3339_to_ms

pytestmark = pytest.mark.integration

PREVIEW = "/api/v1/schedules/preview"


def _preview(cluster: Cluster, body: Any, node: int = 0) -> tuple[int, dict[str, Any]]:
    code, _, answer = http("POST", cluster.nodes[node].url + PREVIEW, body)
    return code, answer


def test_spring_forward_fires_the_skipped_time_at_the_end_of_the_gap(cluster: Cluster) -> None:
    # Europe/Berlin jumps from 02:00 CET to 03:00 CEST on 2027-03-28: 02:30 does not exist that day.
    code, answer = _preview(cluster, {"expression": "30 2 * * *", "timezone": "Europe/Berlin",
                                      "start": "2027-03-26T00:00:00Z", "count": 5})
    assert code == 200, answer
    assert answer == {
        "expression": "30 2 * * *", "timezone": "Europe/Berlin", "description": "At 02:30",
        "start": "2027-03-26T00:00:00.000Z",
        "next": ["2027-03-26T01:30:00.000Z", "2027-03-27T01:30:00.000Z", "2027-03-28T01:00:00.000Z",
                 "2027-03-29T00:30:00.000Z", "2027-03-30T00:30:00.000Z"],
        "next_local": ["2027-03-26T02:30:00.000+01:00", "2027-03-27T02:30:00.000+01:00",
                       "2027-03-28T03:00:00.000+02:00", "2027-03-29T02:30:00.000+02:00",
                       "2027-03-30T02:30:00.000+02:00"]}


def test_fall_back_fires_once_a_day(cluster: Cluster) -> None:
    # Europe/Berlin goes from 03:00 CEST back to 02:00 CET on 2026-10-25: 02:00-03:00 happens twice.
    code, answer = _preview(cluster, {"expression": "30 1 * * *", "timezone": "Europe/Berlin",
                                      "start": "2026-10-23T00:00:00Z", "count": 4}, node=1)
    assert code == 200, answer
    assert answer["next"] == ["2026-10-23T23:30:00.000Z", "2026-10-24T23:30:00.000Z", "2026-10-26T00:30:00.000Z",
                              "2026-10-27T00:30:00.000Z"]
    assert answer["next_local"] == ["2026-10-24T01:30:00.000+02:00", "2026-10-25T01:30:00.000+02:00",
                                    "2026-10-26T01:30:00.000+01:00", "2026-10-27T01:30:00.000+01:00"]
    code, answer = _preview(cluster, {"expression": "30 2 * * *", "timezone": "Europe/Berlin",
                                      "start": "2026-10-24T12:00:00+02:00", "count": 2}, node=2)
    assert code == 200, answer
    assert answer["next_local"] == ["2026-10-25T02:30:00.000+02:00", "2026-10-26T02:30:00.000+01:00"]


def test_defaults_and_every_form(cluster: Cluster) -> None:
    before_ms = int(time.time() * 1000)
    code, answer = _preview(cluster, {"expression": "@every 1m30s"})
    assert code == 200, answer
    assert answer["timezone"] == "UTC" and answer["description"] == "Every 1 minute 30 seconds"
    assert len(answer["next"]) == 5 and answer["next_local"][0].endswith("+00:00")
    assert before_ms <= rfc3339_to_ms(answer["start"]) <= rfc3339_to_ms(answer["next"][0])
    for earlier, later in zip(answer["next"], answer["next"][1:], strict=False):
        assert rfc3339_to_ms(later) - rfc3339_to_ms(earlier) == 90_000

    # 2026-11-27 is a Friday: after 01:15:31 the next is Monday's 01:10:31
    code, answer = _preview(cluster, {"expression": "31 10-15 1 * * MON-FRI", "start": "2026-11-27T01:13:40Z",
                                      "count": 3})
    assert code == 200, answer
    assert answer["next"] == ["2026-11-27T01:14:31.000Z", "2026-11-27T01:15:31.000Z", "2026-11-30T01:10:31.000Z"]
    assert answer["description"].startswith("At 31 seconds past the minute, minutes 10 through 15 past the hour")

    code, answer = _preview(cluster, {"expression": "@daily", "timezone": "Asia/Kolkata", "count": 1,
                                      "start": "2026-06-01T00:00:00Z"})
    assert code == 200, answer
    assert answer["description"] == "At 00:00" and answer["next_local"] == ["2026-06-02T00:00:00.000+05:30"]

    code, answer = _preview(cluster, {"expression": "@at 2030-01-01T10:00:00+01:00", "count": 3,
                                      "start": "2029-12-31T00:00:00Z"})
    assert code == 200, answer
    assert answer["next"] == ["2030-01-01T09:00:00.000Z"]  # a one-shot lists one instant
    assert answer["description"] == "Once at 2030-01-01T09:00:00.000Z"


@pytest.mark.parametrize(("body", "fields"), [
    ({"expression": "61 * * * *"}, ["expression"]),
    ({"expression": "@sometimes"}, ["expression"]),
    ({}, ["expression"]),
    ({"expression": "* * * * *", "timezone": "Mars/Base"}, ["timezone"]),
    ({"expression": "* * * * *", "timezone": "localtime"}, ["timezone"]),
    ({"expression": "* * * * *", "count": 0}, ["count"]),
    ({"expression": "* * * * *", "count": 101}, ["count"]),
    ({"expression": "* * * * *", "count": "5"}, ["count"]),
    ({"expression": "* * * * *", "count": True}, ["count"]),
    ({"expression": "* * * * *", "start": "tomorrow"}, ["start"]),
    ({"expression": "* * * * *", "start": "2026-01-01T00:00:00"}, ["start"]),  # no offset
    ({"expression": "* * * * *", "timezone": "UTC", "colour": "red"}, ["colour"]),
    ({"expression": "0 0 30 2 *", "timezone": "Nowhere/Town", "count": 500}, ["timezone", "expression", "count"]),
])
def test_bad_input_is_a_422_naming_the_field(cluster: Cluster, body: dict[str, Any], fields: list[str]) -> None:
    code, answer = _preview(cluster, body)
    assert code == 422, answer
    assert answer["type"] == "urn:schedb:problem:invalid" and answer["status"] == 422
    assert [e["field"] for e in answer["errors"]] == fields


def test_a_body_that_is_not_an_object_is_a_422(cluster: Cluster) -> None:
    code, answer = _preview(cluster, ["30 2 * * *"])
    assert code == 422 and answer["errors"] == [{"field": "", "message": "must be an object"}]
