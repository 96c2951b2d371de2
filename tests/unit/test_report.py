"""Run reports in webhook answers (issue 9): what the executor extracts, what apply accepts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from schedb.jobspec import validate_job
from schedb.report import ITEM_MAX, MESSAGE_LEN_MAX, clean_report, extract_report
from schedb.webhook import RESPONSE_READ_MAX, deliver, new_session

FULL = {"items_processed": 10, "items_succeeded": 8, "items_failed": 2, "message": "8 of 10 rows"}


def test_a_report_is_taken_from_a_json_object_in_field_order() -> None:
    body = json.dumps({"message": "8 of 10 rows", "ok": True, "items_failed": 2, "items_succeeded": 8,
                       "items_processed": 10, "extra": [1, 2]}).encode()
    report = extract_report(body)
    assert report == FULL and list(report) == list(FULL)
    assert extract_report(b'  \n{"items_processed": 0}') == {"items_processed": 0}
    assert extract_report(b'{"message": ""}') == {"message": ""}


@pytest.mark.parametrize("body", [
    b"", b"ok", b"[1, 2]", b'"items_processed"', b"{not json", b'{"items_processed": 5', b"\xff\xfe{}",
    b"{" * 100_000, b'{"a": ' * 50_000, b'{"ok": true}', b'{"items_processed": ' + b"9" * 5000 + b"}",
])
def test_no_report_in_anything_else(body: bytes) -> None:
    assert extract_report(body) == {}


def test_bad_fields_are_dropped_one_by_one() -> None:
    body = json.dumps({"items_processed": -1, "items_succeeded": 1.5, "items_failed": True,
                       "message": 42}).encode()
    assert extract_report(body) == {}
    body = json.dumps({"items_processed": ITEM_MAX + 1, "items_succeeded": ITEM_MAX, "items_failed": "3"}).encode()
    assert extract_report(body) == {"items_succeeded": ITEM_MAX}


def test_the_message_is_cut_and_always_encodable() -> None:
    report = extract_report(json.dumps({"message": "é" * 1000}).encode())
    assert report == {"message": "é" * MESSAGE_LEN_MAX}
    report = extract_report(b'{"message": "a\\ud800b"}')  # a lone surrogate: no UTF-8 form
    assert report == {"message": "a?b"}
    msgpack.packb(report, use_bin_type=True)  # the log's encoding takes it


def test_apply_keeps_a_well_formed_report_only() -> None:
    assert clean_report(FULL) == FULL
    assert list(clean_report(dict(reversed(FULL.items())))) == list(FULL)  # canonical order
    assert clean_report({"message": "x" * MESSAGE_LEN_MAX}) == {"message": "x" * MESSAGE_LEN_MAX}
    for bad in (None, [], "x", {}, {"items_processed": -1}, {"items_processed": 1, "other": 2},
                {"items_failed": True}, {"items_failed": 1.0}, {"items_failed": ITEM_MAX + 1},
                {"message": "x" * (MESSAGE_LEN_MAX + 1)}, {"message": b"bytes"}, {1: 2}):
        assert clean_report(bad) == {}, bad


# -- deliver against a real HTTP server ------------------------------------------------------

FIRE = {"fire_id": "job:1800000000000", "job_id": "job", "scheduled_ms": 1_800_000_000_000, "attempt": 1}


async def _answer(request: web.Request) -> web.StreamResponse:
    kind = request.query.get("kind", "")
    status = int(request.query.get("status", "200"))
    if kind == "chunked":  # a report that arrives in several pieces
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        text = json.dumps({"pad": "x" * 20_000, **FULL}).encode()
        for start in range(0, len(text), 4096):
            await response.write(text[start:start + 4096])
        await response.write_eof()
        return response
    if kind == "huge":  # over the read limit: cut, so no JSON
        return web.Response(body=b'{"items_processed": 1, "pad": "' + b"x" * RESPONSE_READ_MAX + b'"}', status=status)
    if kind == "garbage":
        return web.Response(body=b'{"items_processed": "lots"', status=status)
    return web.json_response(FULL, status=status)


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/", _answer)
    async with TestServer(app) as srv:
        yield srv


async def _deliver(server: TestServer, query: str) -> Any:
    spec = validate_job({"id": "job", "schedule": "@hourly",
                         "webhook": {"url": str(server.make_url("/")) + query, "timeout_s": 5}})
    session = new_session(4)
    try:
        return await deliver(session, FIRE, spec, "node2", "corr")
    finally:
        await session.close()


async def test_deliver_carries_the_report_of_a_success_and_of_a_failure(server: TestServer) -> None:
    outcome = await _deliver(server, "")
    assert (outcome.status, outcome.report) == ("succeeded", FULL)
    assert outcome.to_list()[-1] == FULL
    outcome = await _deliver(server, "?status=500")
    assert (outcome.status, outcome.http_status, outcome.report) == ("failed", 500, FULL)
    outcome = await _deliver(server, "?kind=chunked")
    assert (outcome.status, outcome.report) == ("succeeded", FULL)


@pytest.mark.parametrize("kind", ["huge", "garbage"])
async def test_a_bad_report_never_fails_the_attempt(server: TestServer, kind: str) -> None:
    outcome = await _deliver(server, f"?kind={kind}")
    assert (outcome.status, outcome.http_status, outcome.error, outcome.report) == ("succeeded", 200, "", {})
    assert len(outcome.to_list()) == 9  # no report: the row of earlier versions


async def test_an_unreachable_webhook_has_no_report() -> None:
    spec = validate_job({"id": "job", "schedule": "@hourly", "webhook": {"url": "http://127.0.0.1:1/", "timeout_s": 2}})
    async with aiohttp.ClientSession() as session:
        outcome = await deliver(session, FIRE, spec, "node2", "corr")
    assert outcome.status == "failed" and outcome.report == {}
