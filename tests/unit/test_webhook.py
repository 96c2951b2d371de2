from __future__ import annotations

import json

from schedb.jobspec import validate_job
from schedb.webhook import build_request

FIRE = {"fire_id": "job:1800000000000", "job_id": "job", "scheduled_ms": 1_800_000_000_000, "attempt": 2}


def test_request_carries_the_promised_headers_and_default_body() -> None:
    spec = validate_job({"id": "job", "schedule": "@hourly",
                         "webhook": {"url": "http://127.0.0.1/h", "headers": {"X-Team": "a"}}})
    headers, body = build_request(FIRE, spec, "node2", "corr-1")
    assert headers == {
        "X-Team": "a", "Idempotency-Key": "job:1800000000000", "X-Schedb-Job-Id": "job",
        "X-Schedb-Fire-Id": "job:1800000000000", "X-Schedb-Scheduled-At": "2027-01-15T08:00:00.000Z",
        "X-Schedb-Attempt": "2", "X-Schedb-Node": "node2", "X-Correlation-ID": "corr-1",
        "Content-Type": "application/json",
    }
    assert json.loads(body) == {"job_id": "job", "fire_id": "job:1800000000000",
                                "scheduled_at": "2027-01-15T08:00:00.000Z", "attempt": 2}


def test_job_body_replaces_the_default_and_get_sends_none() -> None:
    spec = validate_job({"id": "job", "schedule": "@hourly", "webhook": {"url": "http://h/", "body": {"x": [1]}}})
    assert json.loads(build_request(FIRE, spec, "n", "c")[1]) == {"x": [1]}
    spec = validate_job({"id": "job", "schedule": "@hourly", "webhook": {"url": "http://h/", "method": "get"}})
    assert build_request(FIRE, spec, "n", "c")[1] is None
