"""Validation of a job definition as a user sends it.

`validate_job(raw)` returns a normalized spec (a plain dict with every field
present and defaults filled in) or raises `InvalidJob` listing each field at
fault. The API calls it before proposing a command, and the state machine calls
it again while applying, so a bad command is rejected the same way on every node.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from schedb.schedule import ScheduleError, parse_schedule, parse_timezone

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PRIORITIES = ("low", "normal", "high", "critical")
CONCURRENCY = ("allow", "forbid", "replace")
DELIVERY = ("at_least_once", "at_most_once")
MISFIRE = ("run_once", "run_all", "skip")
URL_LEN_MAX = 2048
HEADERS_MAX = 32
HEADER_VALUE_LEN_MAX = 4096
TAGS_MAX = 32
TAG_LEN_MAX = 128
BODY_BYTES_MAX = 64 * 1024
BODY_DEPTH_MAX = 32
TIMEOUT_S_MAX = 300.0
ATTEMPTS_MAX = 100
DEFAULT_ATTEMPTS = 3  # a passing blip at the receiver should not make a dead letter
BACKOFF_S_MAX = 86_400.0
# Headers that schedb sets on every delivery; a job may not override them.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in ("Idempotency-Key", "X-Schedb-Job-Id", "X-Schedb-Fire-Id", "X-Schedb-Scheduled-At",
              "X-Schedb-Attempt", "X-Schedb-Node", "X-Schedb-Signature", "X-Correlation-ID", "X-Schedb-Run-Id", "Host",
              "Content-Length")
)
# A URL must not hold whitespace (str.isspace's, every code point of it) or a control character.
_URL_REFUSED_CHAR = re.compile(r"[\s\x00-\x1f]")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")

TOP_FIELDS = ("id", "schedule", "timezone", "webhook", "retry", "priority", "concurrency",
              "delivery", "misfire", "paused", "tags", "depends_on", "trigger_rule", "breaker")
TRIGGER_RULES = ("all_succeeded", "all_done", "any_succeeded")
DEPENDS_ON_MAX = 32
WEBHOOK_FIELDS = ("url", "method", "headers", "body", "timeout_s", "signing_secret")
SECRET_LEN_MIN = 16
# {{secrets/NAME}}: a team secret, resolved by the executor at delivery (secretbox.py).
SECRET_REFERENCE = re.compile(r"\{\{\s*secrets/([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})\s*\}\}")
SECRET_LEN_MAX = 256
RETRY_FIELDS = ("max_attempts", "backoff_s", "backoff_max_s")
# A job's own circuit breaker settings, over the node's [breaker] (schedb.breaker): each with its bounds.
BREAKER_FIELDS = ("enabled", "failures", "failure_rate", "window_s", "cooldown_s")
BREAKER_FAILURES_MAX = 1000
BREAKER_S_MAX = 3600.0


class InvalidJob(ValueError):
    """A job definition with one or more bad fields."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append({"field": field, "message": message})


def validate_job(raw: Any, job_id: str | None = None) -> dict[str, Any]:
    """Normalize a job definition; `job_id` (from the URL or generated) wins over raw["id"] if given."""
    errs = _Errors()
    if not isinstance(raw, dict):
        raise InvalidJob([{"field": "", "message": "a job must be a JSON object"}])
    _unknown(raw, TOP_FIELDS, "", errs)
    spec: dict[str, Any] = {"id": _job_id(raw.get("id", job_id), job_id, errs)}
    spec["timezone"] = _timezone(raw.get("timezone", "UTC"), errs)
    spec["depends_on"] = _depends_on(raw.get("depends_on", []), spec["id"], errs)
    spec["trigger_rule"] = _choice(raw, "trigger_rule", TRIGGER_RULES, errs)
    # A job that runs after its upstreams needs no schedule of its own (None: it has none).
    optional = bool(spec["depends_on"]) and raw.get("schedule") is None
    spec["schedule"] = None if optional else _schedule(raw.get("schedule"), spec["timezone"], errs)
    spec["webhook"] = _webhook(raw.get("webhook"), errs)
    spec["retry"] = _retry(raw.get("retry", {}), errs)
    spec["priority"] = _choice(raw, "priority", PRIORITIES, errs)
    spec["concurrency"] = _choice(raw, "concurrency", CONCURRENCY, errs)
    spec["delivery"] = _choice(raw, "delivery", DELIVERY, errs)
    spec["misfire"] = _choice(raw, "misfire", MISFIRE, errs)
    paused = raw.get("paused", False)
    if not isinstance(paused, bool):
        errs.add("paused", "must be true or false")
    spec["paused"] = paused is True
    spec["tags"] = _string_map(raw.get("tags", {}), "tags", TAGS_MAX, TAG_LEN_MAX, errs)
    # Absent when unset (specs from before it stay the same); {} is unset too: a merge patch that
    # removes its last field leaves it.
    if raw.get("breaker") not in (None, {}):
        spec["breaker"] = _breaker(raw["breaker"], errs)
    if errs.items:
        raise InvalidJob(errs.items)
    return spec


def _unknown(raw: dict[str, Any], known: tuple[str, ...], prefix: str, errs: _Errors) -> None:
    for key in raw:
        if key not in known:
            errs.add(f"{prefix}{key}", f"unknown field; known: {', '.join(known)}")


def _job_id(value: Any, url_id: str | None, errs: _Errors) -> str:
    if url_id is not None and value != url_id:
        errs.add("id", "does not match the id in the URL")
    if not isinstance(value, str) or not JOB_ID_PATTERN.fullmatch(value):
        errs.add("id", "must be 1-128 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
        return ""
    return value


def _depends_on(value: Any, job_id: str, errs: _Errors) -> list[str]:
    if value == [] and type(value) is list:  # most jobs: no upstreams (validated four times per job)
        return []
    if not isinstance(value, list) or len(value) > DEPENDS_ON_MAX:
        errs.add("depends_on", f"must be a list of at most {DEPENDS_ON_MAX} job ids")
        return []
    ids = [v for v in value if isinstance(v, str) and JOB_ID_PATTERN.fullmatch(v)]
    if len(ids) != len(value) or len(set(ids)) != len(ids):
        errs.add("depends_on", "must hold distinct job ids")
        return []
    if job_id in ids:
        errs.add("depends_on", f"a dependency cycle: {job_id} → {job_id}")
        return []
    return sorted(ids)


def _timezone(value: Any, errs: _Errors) -> str:
    try:
        parse_timezone(value)
    except ScheduleError as exc:
        errs.add("timezone", f"{exc}; use an IANA name such as Europe/Berlin")
        return "UTC"
    return sys.intern(str(value))  # one string for all jobs in a zone: the state holds many jobs


def _schedule(value: Any, timezone: str, errs: _Errors) -> str:
    if value is None:
        errs.add("schedule", "is required")
        return ""
    if not isinstance(value, str):
        errs.add("schedule", "must be a string")
        return ""
    if not value.lstrip().startswith("@") and any(
            part[:1] in ("R", "r") for field in value.split() for part in field.split(",")):
        # croniter's R picks a random value per process: the nodes would disagree on fire times.
        errs.add("schedule", "random fields (R) are not supported: every node must compute the same fire times")
        return ""
    try:
        return parse_schedule(value, timezone).expression
    except ScheduleError as exc:
        errs.add("schedule", str(exc))
        return ""


def _webhook(value: Any, errs: _Errors) -> dict[str, Any]:
    if not isinstance(value, dict):
        errs.add("webhook", "is required and must be an object with at least url")
        return {}
    _unknown(value, WEBHOOK_FIELDS, "webhook.", errs)
    method = value.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        errs.add("webhook.method", f"must be one of {', '.join(METHODS)}")
        method = "POST"
    headers = _string_map(value.get("headers", {}), "webhook.headers", HEADERS_MAX, HEADER_VALUE_LEN_MAX, errs)
    for name, header_value in headers.items():
        if not _TOKEN.match(name) or name.lower() in RESERVED_HEADERS:
            errs.add(f"webhook.headers.{name}", "is not a valid header name or is set by schedb")
        elif any(c in header_value for c in "\r\n\0"):
            errs.add(f"webhook.headers.{name}", "must not contain CR, LF or NUL")
    return {
        "url": _url(value.get("url"), errs),
        "method": METHODS[METHODS.index(method.upper())],  # the constant, not a copy per job
        "headers": headers,
        "body": _body(value.get("body"), errs),
        "timeout_s": _number(value.get("timeout_s", 30), "webhook.timeout_s", 0.001, TIMEOUT_S_MAX, errs),
        "signing_secret": _secret(value.get("signing_secret"), errs),
    }


def _secret(value: Any, errs: _Errors) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and SECRET_REFERENCE.fullmatch(value):
        return value  # {{secrets/NAME}}: the key stays out of the job (resolved at delivery)
    if not isinstance(value, str) or not SECRET_LEN_MIN <= len(value) <= SECRET_LEN_MAX or not value.isprintable():
        errs.add("webhook.signing_secret", f"must be {SECRET_LEN_MIN}-{SECRET_LEN_MAX} printable characters, "
                 "or {{secrets/NAME}}")
        return None
    return value


def _url(value: Any, errs: _Errors) -> str:
    if not isinstance(value, str) or not value:
        errs.add("webhook.url", "is required and must be a string")
        return ""
    if len(value) > URL_LEN_MAX or _URL_REFUSED_CHAR.search(value):
        errs.add("webhook.url", f"must be at most {URL_LEN_MAX} characters without spaces")
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        errs.add("webhook.url", "is not a valid URL")
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errs.add("webhook.url", "must be an http:// or https:// URL with a host")
        return ""
    return value


def _body(value: Any, errs: _Errors) -> Any:
    if value is None:
        return None
    if json_depth(value) > BODY_DEPTH_MAX:  # the log's encoding (msgpack) nests at most 511 deep
        errs.add("webhook.body", f"must nest at most {BODY_DEPTH_MAX} levels deep")
        return None
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > BODY_BYTES_MAX:
        errs.add("webhook.body", f"must be at most {BODY_BYTES_MAX} bytes of JSON")
        return None
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of JSON, iteratively (a recursive walk could itself overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= BODY_DEPTH_MAX and isinstance(item, dict | list):
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _retry(value: Any, errs: _Errors) -> dict[str, Any]:
    if not isinstance(value, dict):
        errs.add("retry", "must be an object")
        value = {}
    _unknown(value, RETRY_FIELDS, "retry.", errs)
    attempts = value.get("max_attempts", DEFAULT_ATTEMPTS)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= ATTEMPTS_MAX:
        errs.add("retry.max_attempts", f"must be an integer from 1 to {ATTEMPTS_MAX}")
        attempts = 1
    backoff = _number(value.get("backoff_s", 1), "retry.backoff_s", 0, BACKOFF_S_MAX, errs)
    backoff_max = _number(value.get("backoff_max_s", 300), "retry.backoff_max_s", 0, BACKOFF_S_MAX, errs)
    return {"max_attempts": attempts, "backoff_s": backoff, "backoff_max_s": backoff_max}


def _breaker(value: Any, errs: _Errors) -> dict[str, Any]:
    if not isinstance(value, dict):
        errs.add("breaker", f"must be an object with one or more of {', '.join(BREAKER_FIELDS)}")
        return {}
    _unknown(value, BREAKER_FIELDS, "breaker.", errs)
    out: dict[str, Any] = {}
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            errs.add("breaker.enabled", "must be true or false")
        out["enabled"] = value["enabled"] is True
    if "failures" in value:
        failures = value["failures"]
        if not isinstance(failures, int) or isinstance(failures, bool) or not 1 <= failures <= BREAKER_FAILURES_MAX:
            errs.add("breaker.failures", f"must be an integer from 1 to {BREAKER_FAILURES_MAX}")
        out["failures"] = failures
    if "failure_rate" in value:
        out["failure_rate"] = _number(value["failure_rate"], "breaker.failure_rate", 0.01, 1, errs)
    for field in ("window_s", "cooldown_s"):
        if field in value:
            out[field] = _number(value[field], f"breaker.{field}", 1, BREAKER_S_MAX, errs)
    return {k: out[k] for k in BREAKER_FIELDS if k in out}  # one order, whatever the input's


def _choice(raw: dict[str, Any], field: str, allowed: tuple[str, ...], errs: _Errors) -> str:
    value = raw.get(field, allowed[0] if field != "priority" else "normal")
    if value not in allowed:
        errs.add(field, f"must be one of {', '.join(allowed)}")
        return allowed[0]
    return allowed[allowed.index(value)]  # the constant, not a copy per job


def _number(value: Any, field: str, low: float, high: float, errs: _Errors) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        errs.add(field, f"must be a number from {low:g} to {high:g}")
        return low
    return float(value)


def _string_map(value: Any, field: str, count_max: int, len_max: int, errs: _Errors) -> dict[str, str]:
    if type(value) is dict and not value:  # most jobs: no headers, no tags
        return {}
    if not isinstance(value, dict):
        errs.add(field, "must be an object of strings")
        return {}
    if len(value) > count_max:
        errs.add(field, f"must have at most {count_max} entries")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or not key or len(key) > len_max or len(item) > len_max:
            errs.add(f"{field}.{key}", f"must be a string of at most {len_max} characters")
            continue
        out[key] = item
    return out
