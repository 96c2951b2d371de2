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


def test_signature_is_an_hmac_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    secret = "s3cret-s3cret-s3cret"
    spec = validate_job({"id": "job", "schedule": "@hourly",
                         "webhook": {"url": "http://h/", "signing_secret": secret}})
    headers, body = build_request(FIRE, spec, "n", "c", now_s=1_800_000_000)
    t, v1 = headers["X-Schedb-Signature"].split(",")
    expected = hmac.new(secret.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert t == "t=1800000000" and v1 == f"v1={expected}"
    unsigned = validate_job({"id": "job", "schedule": "@hourly", "webhook": {"url": "http://h/"}})
    assert "X-Schedb-Signature" not in build_request(FIRE, unsigned, "n", "c")[0]
