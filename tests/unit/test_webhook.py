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


async def test_a_put_whose_connection_closes_before_the_answer_is_sent_once() -> None:
    """aiohttp sends an idempotent request again when a kept-alive connection closes before the
    answer; for an at-most-once fire that is a second call. The webhook session never does."""
    import asyncio

    from schedb.webhook import deliver, new_session

    requests: list[bytes] = []

    async def answer_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            body_len = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                 if line.lower().startswith(b"content-length")), b"0"))
            await reader.readexactly(body_len)
            requests.append(head.split(b" ")[0])
            if len(requests) == 1:  # the first request is answered: the connection is kept alive
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            else:  # the next one is read, then the connection closes without an answer
                writer.close()
                return

    server = await asyncio.start_server(answer_then_hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = new_session(8)
    try:
        spec = validate_job({"id": "job", "schedule": "@hourly",
                             "webhook": {"url": f"http://127.0.0.1:{port}/h", "method": "PUT", "timeout_s": 5}})
        assert (await deliver(session, FIRE, spec, "n", "c")).status == "succeeded"
        outcome = await deliver(session, FIRE, spec, "n", "c")
        await asyncio.sleep(0.2)
        assert outcome.status == "failed" and requests == [b"PUT", b"PUT"], (outcome, requests)
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
