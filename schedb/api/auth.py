"""Who is calling, and may they: API keys, roles, teams and the per-team request rate.

Every route declares what it needs (app.ROUTES): PUBLIC (health, readiness,
the OpenAPI document), READ (any role), WRITE (operator or admin: jobs,
controls, dead letters, secrets of their team) or ADMIN (keys, quotas,
membership, the audit log, the metrics, which name every team).

A key is `Authorization: Bearer <token>` or `X-API-Key: <token>`. The state
holds only SHA-256(token); a revoked key is gone from that index the moment
the revocation applies on a node. The config's `auth.admin_key` is an admin of
`auth.admin_team` that needs no state: the way to create the first keys.
With auth off (the local dev cluster) every caller is an admin of team "default".

The caller becomes the `actor` of the request: handlers scope reads with it,
and `context.propose` stamps it on every command, so the state machine scopes
the change to the actor's team and writes it to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
from contextvars import ContextVar
from typing import Any

from aiohttp import web

from schedb.api.problems import Handler, Problem
from schedb.clock import monotonic
from schedb.fsm import queries, tenancy
from schedb.node import Node

PUBLIC, READ, WRITE, ADMIN = "public", "read", "write", "admin"
ALLOWED_ROLES = {READ: ("viewer", "operator", "admin"), WRITE: ("operator", "admin"), ADMIN: ("admin",)}
TOKEN_LEN_MAX = 256
Actor = dict[str, Any]
current_actor: ContextVar[Actor] = ContextVar("schedb_actor", default={})  # noqa: B039 - never mutated


def token_hash(token: str) -> str:
    # surrogateescape: a header that is not UTF-8 reaches us with its bytes escaped; it is just unknown
    return hashlib.sha256(token.encode(errors="surrogateescape")).hexdigest()


def auth_middleware(node: Node, permissions: dict[tuple[str, str], str]) -> Any:
    """The middleware for one node; `permissions` maps (method, route path) to what it needs."""
    limiter = TeamRateLimiter()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        needed = permissions.get((request.method, route), PUBLIC if request.method == "HEAD" else READ)
        if needed == PUBLIC or resource is None:
            return await handler(request)
        actor = identify(node, request)
        if actor["role"] not in ALLOWED_ROLES[needed]:
            raise Problem(403, "Forbidden", f"this needs the {' or '.join(ALLOWED_ROLES[needed])} role; "
                          f"the key is {actor['role']}", kind="forbidden")
        team_quota = node.replica.read(queries.team_quotas, actor["team"])
        if not limiter.allow(actor["team"], team_quota["api_rps"]):
            raise Problem(429, "Quota exceeded", f"team {actor['team']!r} is over its api_rps quota "
                          f"({team_quota['api_rps']} requests per second on each node)", kind="quota-exceeded",
                          errors=[{"field": "api_rps", "message": "over quota"}], headers={"Retry-After": "1"})
        token = current_actor.set(actor)
        try:
            return await handler(request)
        finally:
            current_actor.reset(token)

    return authenticate


def identify(node: Node, request: web.Request) -> Actor:
    remote = request.remote or ""
    if not node.config.auth.enabled:
        return {"key": "", "team": tenancy.DEFAULT_TEAM, "role": "admin", "remote": remote}
    token = _token(request)
    digest = token_hash(token)
    admin_key = node.config.auth.admin_key
    if admin_key and hmac.compare_digest(digest, token_hash(admin_key)):
        return {"key": "config-admin", "team": node.config.auth.admin_team, "role": "admin", "remote": remote}
    key = node.replica.read(queries.key_by_hash, digest)
    if key is None:
        raise _unauthorized("the API key is unknown or revoked")
    return {"key": key["id"], "team": key["team"], "role": key["role"], "remote": remote}


def _token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise _unauthorized("use Authorization: Bearer <key>, or X-API-Key: <key>")
    token = token.strip() or request.headers.get("X-API-Key", "").strip()
    if not token:
        raise _unauthorized("this API needs a key: Authorization: Bearer <key>, or X-API-Key: <key>")
    if len(token) > TOKEN_LEN_MAX:
        raise _unauthorized("the API key is unknown or revoked")
    return token


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, kind="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def require_team(team: str) -> None:
    """Team resources (usage, quotas, secrets) of another team: 403 unless admin."""
    actor = current_actor.get()
    if not tenancy.is_admin(actor) and actor.get("team") != team:
        raise Problem(403, "Forbidden", f"the key belongs to team {actor.get('team')!r}, not {team!r}",
                      kind="forbidden")


def acting_team(request: web.Request) -> str:
    """The team a request acts for: the key's, or for an admin the `team` query parameter."""
    actor = current_actor.get()
    team = request.query.get("team") or actor.get("team") or tenancy.DEFAULT_TEAM
    if not tenancy.valid_team(team):
        raise Problem(400, "Invalid query", "team: not a valid team name", kind="invalid-query",
                      errors=[{"field": "team", "message": "not a valid team name"}])
    require_team(team)
    return team


def sees(job: dict[str, Any]) -> bool:
    return tenancy.can_touch(current_actor.get(), job)


class TeamRateLimiter:
    """A token bucket per team on this node: `rate` requests per second, bursts up to `rate`."""

    TEAMS_MAX = 10_000

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # team -> [tokens, last refill]

    def allow(self, team: str, rate: int) -> bool:
        now = monotonic()
        bucket = self._buckets.get(team)
        if bucket is None:
            if len(self._buckets) >= self.TEAMS_MAX:
                self._buckets.clear()  # bounded; a reset only forgives a second's worth
            bucket = self._buckets[team] = [float(rate), now]
        bucket[0] = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True
