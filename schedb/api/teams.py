"""Per-team views and settings: usage (cost tracking), quotas, and the audit log (admin)."""

from __future__ import annotations

from aiohttp import web

from schedb.api.auth import require_team
from schedb.api.context import NODE, json_response, propose, query_int
from schedb.api.problems import Problem, read_json
from schedb.api.views import time_or_none
from schedb.clock import wall_ms
from schedb.commands import SetQuotas
from schedb.fsm import queries, tenancy
from schedb.fsm.limits import QUOTA_NAMES

AUDIT_LIMIT_MAX = 1_000


def _team(request: web.Request) -> str:
    team = request.match_info["team"]
    if not tenancy.valid_team(team):
        raise Problem(404, "Not found", f"no team {team!r}", kind="not-found")
    require_team(team)
    return team


async def get_usage(request: web.Request) -> web.Response:
    """What the team used since the cluster began (the counters are replicated), and now."""
    team = _team(request)
    return json_response(request.app[NODE].replica.read(queries.team_usage, team, wall_ms()))


async def get_quotas(request: web.Request) -> web.Response:
    team = _team(request)
    node = request.app[NODE]
    quotas, own = node.replica.read(queries.quota_settings, team)
    return json_response({"team": team, "quotas": quotas, "set_for_team": own})


async def put_quotas(request: web.Request) -> web.Response:
    """Set some quotas of a team (a number), or put them back to the config's default (null)."""
    team = _team(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        message = f"send an object with some of {', '.join(QUOTA_NAMES)}"
        raise Problem(422, "Invalid quotas", message, kind="invalid", errors=[{"field": "", "message": message}])
    result = await propose(request.app[NODE], SetQuotas(wall_ms(), team, body))
    return json_response({"team": team, "quotas": result["quotas"]})


async def get_audit(request: web.Request) -> web.Response:
    """Audit records, newest first; `after` (a seq) pages forward, `team` filters."""
    limit = query_int(request, "limit", 100, 1, AUDIT_LIMIT_MAX)
    after = query_int(request, "after", 0, 0, 2**53)
    team = request.query.get("team")
    rows = request.app[NODE].replica.read(queries.audit_records, after, limit, team)
    return json_response({"records": [{**{k: v for k, v in row.items() if k != "at_ms"},
                                       "at": time_or_none(row["at_ms"])} for row in rows]})
