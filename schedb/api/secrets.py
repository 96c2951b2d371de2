"""Team secrets: write-only values, referenced by jobs as {{secrets/NAME}}.

The value is sealed (AES-GCM, bound to team and name) on the node that receives
it, before it is proposed: the log, the snapshots and every node's memory hold
only the sealed bytes. No endpoint ever returns a value."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb import secretbox
from schedb.api.auth import acting_team
from schedb.api.context import NODE, json_response, propose
from schedb.api.problems import Problem, read_json
from schedb.api.views import time_or_none
from schedb.clock import wall_ms
from schedb.commands import DeleteSecret, PutSecret
from schedb.fsm import queries
from schedb.node import Node

SECRET_FIELDS = ("name", "value")


def _box(node: Node) -> secretbox.SecretBox:
    if node.secret_box is None:
        raise Problem(503, "Secrets are off", "this node has no secrets key: set secrets.key_file or "
                      "SCHEDB_SECRETS_KEY (the same 32-byte key on every node)", kind="secrets-unavailable")
    return node.secret_box


def _secret_view(team: str, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"team": team, "name": name, "version": entry["version"],
            "created_at": time_or_none(entry["created_ms"]), "updated_at": time_or_none(entry["updated_ms"])}


async def put_secret(request: web.Request) -> web.Response:
    """Create or replace a secret: 201 when new, 200 when replaced."""
    node = request.app[NODE]
    box = _box(node)
    team = acting_team(request)
    body = await read_json(request)
    name, value = _parse(body)
    result = await propose(node, PutSecret(wall_ms(), team, name, box.seal(team, name, value)))
    return json_response(_secret_view(team, name, result), 201 if result["created"] else 200)


def _parse(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise _invalid("", "send {\"name\": …, \"value\": …}")
    for field in body:
        if field not in SECRET_FIELDS:
            raise _invalid(field, f"unknown field; known: {', '.join(SECRET_FIELDS)}")
    name, value = body.get("name"), body.get("value")
    if not isinstance(name, str) or not secretbox.valid_name(name):
        raise _invalid("name", "required: 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
    if not isinstance(value, str) or not value or len(value.encode()) > secretbox.SECRET_VALUE_BYTES_MAX:
        raise _invalid("value", f"required: a non-empty string of at most {secretbox.SECRET_VALUE_BYTES_MAX} bytes")
    if set(value) <= {"*"} or "\0" in value:
        raise _invalid("value", "must not be only '*' (it could not be masked) nor contain NUL")
    return name, value


async def list_secrets(request: web.Request) -> web.Response:
    team = acting_team(request)
    rows = [_secret_view(team, name, entry)
            for name, entry in request.app[NODE].replica.read(queries.team_secrets, team)]
    return json_response({"secrets": rows})


async def delete_secret(request: web.Request) -> web.Response:
    team = acting_team(request)
    await propose(request.app[NODE], DeleteSecret(wall_ms(), team, request.match_info["name"]))
    return web.Response(status=204)


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "Invalid secret", f"{field}: {message}" if field else message, kind="invalid",
                   errors=[{"field": field, "message": message}])
