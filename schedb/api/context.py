"""What handlers need from the node: the app key, and proposing a command as HTTP semantics."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from schedb.api.auth import current_actor
from schedb.api.problems import Problem
from schedb.commands import Command
from schedb.fsm.model import Result
from schedb.node import Node
from schedb.raft import SubmitError

NODE = web.AppKey("node", Node)
RETRY_AFTER_S = "1"
_RESULT_STATUS = {"invalid": (422, "Invalid job"), "not_found": (404, "Not found"),
                  "conflict": (409, "Conflict"), "precondition_failed": (412, "Precondition failed"),
                  "slot_full": (429, "Too many jobs in one second"), "forbidden": (403, "Forbidden"),
                  "quota": (429, "Quota exceeded")}
SLOT_RETRY_AFTER_S = "60"


async def propose(node: Node, command: Command) -> Result:
    """Submit, stamped with the request's actor, and await commit; a rejected command
    becomes the matching problem."""
    if not command.actor:
        command = dataclasses.replace(command, actor=current_actor.get())
    # A node whose clock is measured off the leader's stamps what it proposes with the leader's time.
    command = dataclasses.replace(command, now_ms=node.clock.leader_time_ms(command.now_ms))
    if not node.replica.has_capacity:
        raise Problem(429, "Too many pending commands", "the node has too many commands in flight",
                      kind="too-many-requests", headers={"Retry-After": RETRY_AFTER_S})
    try:
        result = await node.replica.submit(command)
    except SubmitError as exc:
        raise _unavailable(exc) from exc
    if "error" in result:
        raise result_problem(result)
    return result


def result_problem(result: Result) -> Problem:
    status, title = _RESULT_STATUS.get(result["error"], (400, "Rejected"))
    headers = {"Retry-After": SLOT_RETRY_AFTER_S} if status == 429 else None
    errors = result.get("errors")
    if result["error"] == "quota":
        errors = [{"field": result.get("limit", ""), "message": "over quota"}]
    kind = "quota-exceeded" if result["error"] == "quota" else result["error"].replace("_", "-")
    return Problem(status, title, result.get("detail", ""), kind=kind, errors=errors, headers=headers)


def _unavailable(exc: SubmitError) -> Problem:
    headers = {"Retry-After": RETRY_AFTER_S}
    if exc.reason == "queue_full":
        return Problem(429, "Too many pending commands", "the Raft queue is full", kind="too-many-requests",
                       headers=headers)
    if exc.unknown:
        return Problem(503, "Outcome unknown", f"the change may or may not have been applied ({exc.reason}); "
                       "read it back before retrying", kind="outcome-unknown", headers=headers)
    return Problem(503, "No leader", f"the cluster cannot commit right now ({exc.reason})", kind="no-leader",
                   headers=headers)


def invalid_query(name: str, detail: str, message: str) -> Problem:
    return Problem(400, "Invalid query", detail, kind="invalid-query", errors=[{"field": name, "message": message}])


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(high)) or not low <= int(text) <= high:
        raise invalid_query(name, f"{name} must be an integer from {low} to {high}", f"integer {low}..{high}")
    return int(text)


def query_flag(request: web.Request, name: str) -> bool | None:
    """`true` or `false`; None when absent."""
    text = request.query.get(name)
    if text not in (None, "true", "false"):
        raise invalid_query(name, f"{name} must be true or false", "true or false")
    return None if text is None else text == "true"


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    text = request.query.get(name)
    if text is not None and text not in choices:
        raise invalid_query(name, f"{name} must be one of {', '.join(choices)}", f"one of {', '.join(choices)}")
    return text


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)
