"""RFC 9457 problem+json answers, and the middleware that makes every error one."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("schedb.api")
PROBLEM_TYPE_BASE = "urn:schedb:problem:"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str = "", *, kind: str = "",
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors = errors
        self.headers = headers or {}


def problem_response(problem: Problem) -> web.Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + problem.kind, "title": problem.title,
                            "status": problem.status, "detail": problem.detail}
    if problem.errors is not None:
        body["errors"] = problem.errors
    return web.Response(status=problem.status, text=json.dumps(body), headers=problem.headers,
                        content_type="application/problem+json")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem)
    except web.HTTPRequestEntityTooLarge as exc:
        return problem_response(Problem(413, "Body too large", exc.text or "", kind="body-too-large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(Problem(exc.status, exc.reason, exc.text or "", kind=f"http-{exc.status}"))
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return problem_response(Problem(500, "Internal error", "see the node's log", kind="internal"))


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400/413/415 problem."""
    if request.content_type not in ("application/json", "application/merge-patch+json", ""):
        raise Problem(415, "Unsupported media type", "send application/json", kind="unsupported-media-type")
    data = await request.read()
    try:
        value = json.loads(data, parse_constant=_not_json, parse_float=_finite, parse_int=_storable_int)
        json.dumps(value, ensure_ascii=False).encode()  # a lone surrogate ("\ud800") is no text: refuse it
        return value
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and Unicode errors
        raise Problem(400, "Invalid JSON", f"the body is not valid JSON: {exc}", kind="invalid-json",
                      errors=[{"field": "", "message": "not valid JSON"}]) from exc


# Strict JSON: Python's parser takes NaN and Infinity, which no answer could carry back as
# JSON, and integers of any size, which the log's encoding (msgpack) cannot carry.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is out of range")
    return value


def _storable_int(text: str) -> int:
    value = int(text)  # more than 4,300 digits: ValueError
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("an integer is out of the 64-bit range")
    return value
