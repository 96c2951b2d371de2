"""One webhook attempt: build the request DESIGN.md promises and classify the answer."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from schedb.clock import wall_ms, wall_s
from schedb.commands import Outcome
from schedb.egress import EgressPolicy, EgressRefused, GuardedResolver
from schedb.report import extract_report
from schedb.secretbox import mask
from schedb.timefmt import ms_to_rfc3339

# We read at most this much of an answer: its status decides the attempt, its body may
# carry a run report (schedb.report), and a huge body must not hold a worker.
RESPONSE_READ_MAX = 64 * 1024
ERROR_TEXT_MAX = 300
RETRY_AFTER_S_MAX = 86_400


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """X-Schedb-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed by the job's secret>."""
    digest = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def build_request(fire: dict[str, Any], spec: dict[str, Any], node_id: str, correlation_id: str,
                  now_s: int | None = None) -> tuple[dict[str, str], bytes | None]:
    scheduled_at = ms_to_rfc3339(fire["scheduled_ms"])
    headers = dict(spec["webhook"]["headers"])
    headers.update({
        "Idempotency-Key": fire["fire_id"],
        "X-Schedb-Job-Id": fire["job_id"],
        "X-Schedb-Fire-Id": fire["fire_id"],
        "X-Schedb-Scheduled-At": scheduled_at,
        "X-Schedb-Attempt": str(fire["attempt"]),
        "X-Schedb-Node": node_id,
        "X-Correlation-ID": correlation_id,
    })
    if fire.get("run_id"):
        headers["X-Schedb-Run-Id"] = fire["run_id"]
    data: bytes | None = None
    if spec["webhook"]["method"] != "GET":
        body = spec["webhook"]["body"]
        if body is None:
            body = {"job_id": fire["job_id"], "fire_id": fire["fire_id"],
                    "scheduled_at": scheduled_at, "attempt": fire["attempt"]}
            if fire.get("run_id"):
                body["run_id"] = fire["run_id"]
        if fire.get("params") and isinstance(body, dict):  # a manual run's parameters
            body = {**body, "params": fire["params"]}
        headers.setdefault("Content-Type", "application/json")
        data = json.dumps(body, separators=(",", ":")).encode()
    secret = spec["webhook"].get("signing_secret")
    if secret:
        headers["X-Schedb-Signature"] = sign(secret, int(wall_s()) if now_s is None else now_s, data or b"")
    return headers, data


# A delivery's correlation id, unique across nodes and restarts, without a system call per fire
# (uuid4 reads os.urandom each time: 2.0 µs a call, against 0.7 µs for this): a count, hashed
# with a key drawn once per process so that a receiver learns nothing from it (how many fires
# this node sent, for whom, when it restarted). An id to follow a fire by, not a secret.
_CORRELATION_KEY = secrets.token_bytes(16)
_correlation_numbers = itertools.count()


def new_correlation_id() -> str:
    number = next(_correlation_numbers).to_bytes(8, "big")
    return hashlib.blake2b(number, key=_CORRELATION_KEY, digest_size=16).hexdigest()


# Reasons, first in the error text, of attempts a delivery worker (schedb.worker) did not see
# through: its process ended during the call (the receiver may have had it), or it reached the
# call too late to start it within the attempt's lease (it was not made).
WORKER_LOST = "worker_lost"
WORKER_LATE = "worker_late"
WORKER_ERROR = "worker_error"  # a bug of the worker: the call's fate is unknown

# The executor's way to call one webhook: (fire, spec with secrets resolved, correlation id,
# the secret values to mask) → its outcome. `sender` builds the real one; the simulator its own.
Send = Callable[[dict[str, Any], dict[str, Any], str, list[str]], Awaitable[Outcome]]


def sender(session: aiohttp.ClientSession, node_id: str, egress: EgressPolicy | None) -> Send:
    """deliver() over this node's session (its resolver judges names) and egress policy."""
    async def send(fire: dict[str, Any], spec: dict[str, Any], correlation_id: str,
                   secret_values: list[str]) -> Outcome:
        return await deliver(session, fire, spec, node_id, correlation_id, egress, secret_values)

    return send


async def deliver(session: aiohttp.ClientSession, fire: dict[str, Any], spec: dict[str, Any],
                  node_id: str, correlation_id: str, egress: EgressPolicy | None = None,
                  secret_values: list[str] | None = None) -> Outcome:
    """Call the webhook once; never raises for what the receiver does.

    `spec` has its secrets resolved already; `secret_values` are masked out of the error
    text, which goes to the log and the execution record. Redirects are never followed:
    a 3xx is a failed attempt, so a receiver cannot bounce the call past the egress policy."""
    headers, body = build_request(fire, spec, node_id, correlation_id)
    webhook = spec["webhook"]
    started_ms = wall_ms()
    status, http_status, error, retry_after_ms = "failed", 0, "", 0
    report: dict[str, Any] = {}
    try:
        if egress is not None:
            # The host aiohttp will connect to (yarl-normalised: fullwidth digits are ASCII ones), judged
            # again here since the policy may have tightened; a name is checked by the session's resolver.
            egress.check_literal(webhook["url"])
        # To the millisecond: by default aiohttp rounds a timeout of 5 s or more up to the next
        # whole second of the loop's clock, and the executor's lease check counts on timeout_s.
        timeout = aiohttp.ClientTimeout(total=webhook["timeout_s"], ceil_threshold=math.inf)
        async with session.request(webhook["method"], webhook["url"], headers=headers, data=body,
                                   timeout=timeout, allow_redirects=False) as response:
            http_status = response.status
            if http_status in (429, 503):
                retry_after_ms = parse_retry_after_ms(response.headers.get("Retry-After", ""), wall_s())
            report = extract_report(await read_answer(response))
        if 200 <= http_status < 300:
            status = "succeeded"
        else:
            error = f"HTTP {http_status}"
    except TimeoutError:
        status, error = "timed_out", f"no answer within {webhook['timeout_s']:g} s"
    except EgressRefused as exc:
        error = str(exc)
    except aiohttp.ClientResponseError as exc:  # its text carries the URL, which may carry a secret
        error = f"{type(exc).__name__}: {exc.status}, {exc.message}"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    error = mask(error, secret_values or ())[:ERROR_TEXT_MAX]
    return Outcome(fire["fire_id"], fire["attempt"], status, http_status, started_ms, wall_ms(), error,
                   retry_after_ms, len(body or b""), report)


async def read_answer(response: aiohttp.ClientResponse) -> bytes:
    """At most RESPONSE_READ_MAX bytes of the answer's body. Only the first read can fail the
    attempt; the rest of a JSON object is read for its run report, which never does."""
    data = await response.content.read(RESPONSE_READ_MAX)
    if data.lstrip() and not data.lstrip().startswith(b"{"):
        return data
    chunks = [data]
    size = len(data)
    try:
        while size < RESPONSE_READ_MAX:
            chunk = await response.content.read(RESPONSE_READ_MAX - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return b""  # no report, the status stands
    return b"".join(chunks)


def parse_retry_after_ms(value: str, now_s: float) -> int:
    """Retry-After as delay seconds or an HTTP date; 0 when absent or unreadable."""
    value = value.strip()
    if value.isdigit():
        return min(int(value), RETRY_AFTER_S_MAX) * 1000
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0
    if when.tzinfo is None:
        return 0
    return int(max(0.0, min(when.timestamp() - now_s, RETRY_AFTER_S_MAX)) * 1000)


def new_session(max_inflight: int, egress: EgressPolicy | None = None) -> aiohttp.ClientSession:
    """Webhooks' session; with a policy, every name is resolved through it (checked after DNS)."""
    resolver = GuardedResolver(egress) if egress is not None else None
    # The DNS cache is short: the policy judges what a name resolves to now.
    connector = aiohttp.TCPConnector(limit=max_inflight, limit_per_host=max_inflight, ttl_dns_cache=10,
                                     resolver=resolver)
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                    auto_decompress=False)
    # aiohttp sends an idempotent request (GET, PUT, DELETE, …) a second time when a kept-alive
    # connection closes before the answer: an at-most-once fire would be called twice. It has no
    # public setting for this (aiohttp 3.14, pinned; tests/unit/test_webhook.py checks it holds).
    session._retry_connection = False
    return session

