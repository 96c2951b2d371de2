"""API keys (admin): create (the token is shown once), list, revoke; and, for any key, whoami.

The token is made here, on the node that answers, and only its SHA-256 enters
the log; a revocation is effective on each node as soon as that node applies it."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from schedb.api.auth import current_actor, token_hash
from schedb.api.context import NODE, json_response, propose
from schedb.api.problems import Problem, read_json
from schedb.api.views import time_or_none
from schedb.clock import wall_ms
from schedb.commands import CreateApiKey, RevokeApiKey
from schedb.fsm import queries, tenancy

KEY_FIELDS = ("team", "role", "name")


def key_view(key: dict[str, Any]) -> dict[str, Any]:
    return {"id": key["id"], "team": key["team"], "role": key["role"], "name": key["name"],
            "created_at": time_or_none(key["created_ms"]), "revoked_at": time_or_none(key["revoked_ms"]),
            "created_by": key.get("created_by") or None}


async def create_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise _invalid("", "send {\"team\": …, \"role\": …, \"name\": …}")
    for field in body:
        if field not in KEY_FIELDS:
            raise _invalid(field, f"unknown field; known: {', '.join(KEY_FIELDS)}")
    team, role, name = body.get("team"), body.get("role"), body.get("name", "")
    if not tenancy.valid_team(team):
        raise _invalid("team", "required: 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
    if role not in tenancy.ROLES:
        raise _invalid("role", f"required: one of {', '.join(tenancy.ROLES)}")
    if not isinstance(name, str) or len(name) > tenancy.KEY_LABEL_LEN_MAX or not name.isprintable():
        raise _invalid("name", f"at most {tenancy.KEY_LABEL_LEN_MAX} printable characters")
    key_id = secrets.token_hex(8)
    token = f"sk_{key_id}_{secrets.token_urlsafe(32)}"
    node = request.app[NODE]
    await propose(node, CreateApiKey(wall_ms(), key_id, token_hash(token), team, role, name))
    key = node.replica.read(queries.api_key, key_id)
    assert key is not None, "a key committed a moment ago"
    return json_response({**key_view(key), "key": token}, 201, {"Location": f"/api/v1/keys/{key_id}"})


async def list_keys(request: web.Request) -> web.Response:
    keys = request.app[NODE].replica.read(queries.api_keys, request.query.get("team"))
    return json_response({"keys": [key_view(key) for key in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    await propose(request.app[NODE], RevokeApiKey(wall_ms(), request.match_info["key_id"]))
    return web.Response(status=204)


async def whoami(request: web.Request) -> web.Response:
    """The caller's key, team and role, so a console can show (and scope itself to) them.
    With auth off everyone is an admin of the default team, and there is no key."""
    actor = current_actor.get()
    return json_response({"auth": request.app[NODE].config.auth.enabled, "key_id": actor.get("key") or None,
                          "team": actor["team"], "role": actor["role"]})  # a READ route: auth set the actor


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "Invalid key", f"{field}: {message}" if field else message, kind="invalid",
                   errors=[{"field": field, "message": message}])
