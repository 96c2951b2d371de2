"""Teams inside the replicated state: API keys, quotas, secrets, usage and the audit log.

Functions of (state, command), called by apply (schedb.fsm.machine) like the
other handlers, under the same rules: deterministic, no clock but
`command.now_ms`, no I/O. Reads of a team's quota and fire window are used by
the handlers above this module; the team's usage counters are State.usage_of.

- An API key is stored as the SHA-256 of the token only; the token itself is
  shown once to its creator and never enters the log.
- A secret is stored sealed (AES-GCM, by the API node that received it; see
  schedb.secretbox): the state never holds a plain value.
- Quotas are the cluster's defaults (proposed by the leader from its config's
  [quotas], so every node applies the same) unless an admin set a team's own.
- Every command proposed through the API carries its actor (key, team, role,
  remote address); apply writes one audit record per such command.
"""

from __future__ import annotations

import re
from typing import Any

from schedb.commands import (
    Command,
    CreateApiKey,
    DeleteSecret,
    PutSecret,
    RevokeApiKey,
    SetDefaultQuotas,
    SetQuotas,
)
from schedb.fsm.core import State
from schedb.fsm.limits import QUOTA_NAMES
from schedb.fsm.model import ApiKey, Job, Result

ROLES = ("admin", "operator", "viewer")
QUOTA_MAX = 1_000_000_000
DEFAULT_TEAM = "default"  # the team of a job created without one (and of every job of an old snapshot)
# Teams and secret names; used with fullmatch ("$" would let a trailing newline through).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{12,32}")
KEY_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
KEY_LABEL_LEN_MAX = 128
SEALED_BYTES_MAX = 8_192
MINUTE_MS = 60_000


def create_refusal(state: State, actor: dict[str, Any], team: str) -> Result | None:
    """Why a job may not be created in this team now, or None."""
    if not is_admin(actor) and actor.get("team") != team:
        return {"error": "forbidden", "detail": "a key may create jobs only in its own team"}
    if state.team_jobs.get(team, 0) >= quota(state, team)["max_jobs"]:
        return over_quota(state, team, "max_jobs", "delete jobs or ask an admin to raise it")
    return None


def valid_team(team: Any) -> bool:
    return isinstance(team, str) and NAME_PATTERN.fullmatch(team) is not None


def is_admin(actor: dict[str, Any]) -> bool:
    """No actor is the cluster itself (dispatcher, executors): never scoped to a team."""
    return not actor or actor.get("role") == "admin"


def can_touch(actor: dict[str, Any], job: Job) -> bool:
    return is_admin(actor) or job.get("team", DEFAULT_TEAM) == actor.get("team")


def quota(state: State, team: str) -> dict[str, int]:
    return {**state.default_quotas, **state.quotas.get(team, {})}


def take_fires(state: State, team: str, count: int, at_ms: int) -> bool:
    """Count `count` new fires against the team's fires-per-minute quota in the minute of
    at_ms (a fixed window, moving only forward); False, counting nothing, when over it."""
    window = state.fire_windows.setdefault(team, [0, 0])
    minute = at_ms // MINUTE_MS
    if minute > window[0]:
        window[0], window[1] = minute, 0
    if window[1] + count > quota(state, team)["fires_per_minute"]:
        return False
    window[1] += count
    return True


def forget_team_if_gone(state: State, team: str) -> None:
    """A team with no job, no live key, no quota and no secret of its own is gone: its per-team
    entries go too, or they would pile up as teams come and go. Its usage starts over if it comes back."""
    if state.team_jobs.get(team) or team in state.quotas or team in state.secrets:
        return
    if any(key["team"] == team and key["revoked_ms"] is None for key in state.api_keys.values()):
        return
    for per_team in (state.usage, state.fire_windows, state.team_jobs):
        per_team.pop(team, None)


def over_quota(state: State, team: str, limit: str, detail: str) -> Result:
    return {"error": "quota", "limit": limit, "detail": f"team {team!r} is over its {limit} quota "
            f"({quota(state, team)[limit]}): {detail}"}


# -- API keys ---------------------------------------------------------------


def create_api_key(state: State, cmd: CreateApiKey) -> Result:
    if not (isinstance(cmd.key_id, str) and KEY_ID_PATTERN.fullmatch(cmd.key_id)) or \
            not (isinstance(cmd.key_hash, str) and KEY_HASH_PATTERN.fullmatch(cmd.key_hash)):
        return invalid("key_id", "a key needs a hex id and a SHA-256 hash")
    if not valid_team(cmd.team):
        return invalid("team", "1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
    if cmd.role not in ROLES:
        return invalid("role", f"must be one of {', '.join(ROLES)}")
    if not isinstance(cmd.name, str) or len(cmd.name) > KEY_LABEL_LEN_MAX or not cmd.name.isprintable():
        return invalid("name", f"at most {KEY_LABEL_LEN_MAX} printable characters")
    if cmd.key_id in state.api_keys or cmd.key_hash in state.key_hashes:
        return {"error": "conflict", "detail": f"key {cmd.key_id!r} already exists"}
    if len(state.key_hashes) >= state.limits.api_keys_max:
        return {"error": "quota", "limit": "api_keys", "detail": f"at most {state.limits.api_keys_max} live keys"}
    _forget_revoked(state)
    state.api_keys[cmd.key_id] = {"id": cmd.key_id, "hash": cmd.key_hash, "team": cmd.team, "role": cmd.role,
                                  "name": cmd.name, "created_ms": state.now_ms, "revoked_ms": None,
                                  "created_by": cmd.actor.get("key", "")}
    state.key_hashes[cmd.key_hash] = cmd.key_id
    return {"ok": True, "key_id": cmd.key_id}


def _forget_revoked(state: State) -> None:
    """Revoked keys stay listed (who had access) up to as many again as live keys may exist;
    beyond that the oldest revoked records go."""
    if len(state.api_keys) < 2 * state.limits.api_keys_max:
        return
    oldest = next((k for k, v in state.api_keys.items() if v["revoked_ms"] is not None), None)
    if oldest is not None:
        del state.api_keys[oldest]


def revoke_api_key(state: State, cmd: RevokeApiKey) -> Result:
    key = state.api_keys.get(cmd.key_id) if isinstance(cmd.key_id, str) else None
    if key is None:
        return {"error": "not_found", "detail": f"no key {cmd.key_id!r}"}
    if key["revoked_ms"] is None:
        key["revoked_ms"] = state.now_ms
        state.key_hashes.pop(key["hash"], None)
        forget_team_if_gone(state, key["team"])
    return {"ok": True, "key_id": cmd.key_id}


def key_by_hash(state: State, key_hash: str) -> ApiKey | None:
    key_id = state.key_hashes.get(key_hash)
    return None if key_id is None else ApiKey(**state.api_keys[key_id])


# -- quotas and secrets --------------------------------------------------------


def set_quotas(state: State, cmd: SetQuotas) -> Result:
    """Set (a number) or clear (None: back to the default) some of a team's quotas."""
    if not valid_team(cmd.team):
        return invalid("team", "not a valid team name")
    if error := _quota_errors(cmd.quotas, nullable=True):
        return error
    if cmd.team not in state.quotas and len(state.quotas) >= state.limits.quota_teams_max:
        return {"error": "quota", "limit": "teams", "detail": f"at most {state.limits.quota_teams_max} teams "
                "with quotas of their own"}
    own = state.quotas.setdefault(cmd.team, {})
    for name in sorted(cmd.quotas):
        if cmd.quotas[name] is None:
            own.pop(name, None)
        else:
            own[name] = cmd.quotas[name]
    if not own:
        del state.quotas[cmd.team]
        forget_team_if_gone(state, cmd.team)
    return {"ok": True, "quotas": quota(state, cmd.team)}


def set_default_quotas(state: State, cmd: SetDefaultQuotas) -> Result:
    if error := _quota_errors(cmd.quotas, nullable=False):
        return error
    if not isinstance(cmd.quotas, dict) or set(cmd.quotas) != set(QUOTA_NAMES):
        return invalid("quotas", f"all of {', '.join(QUOTA_NAMES)}")
    state.default_quotas = {name: cmd.quotas[name] for name in QUOTA_NAMES}
    return {"ok": True}


def _quota_errors(quotas: Any, *, nullable: bool) -> Result | None:
    if not isinstance(quotas, dict) or not quotas:
        return invalid("quotas", f"an object with some of {', '.join(QUOTA_NAMES)}")
    for name, value in quotas.items():
        if name not in QUOTA_NAMES:
            # The field at fault is the unknown key, or the object itself when the key is empty.
            return invalid(str(name)[:64] or "quotas", f"unknown quota; known: {', '.join(QUOTA_NAMES)}")
        if value is None and nullable:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= QUOTA_MAX:
            return invalid(name, f"an integer from 1 to {QUOTA_MAX}" + (", or null for the default" * nullable))
    return None


def put_secret(state: State, cmd: PutSecret) -> Result:
    if not valid_team(cmd.team):
        return invalid("team", "not a valid team name")
    if not (isinstance(cmd.name, str) and NAME_PATTERN.fullmatch(cmd.name)):
        return invalid("name", "1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit")
    if not isinstance(cmd.sealed, bytes) or not 0 < len(cmd.sealed) <= SEALED_BYTES_MAX:
        return invalid("value", "a sealed secret of bounded size")
    if error := _team_scope(cmd, cmd.team):
        return error
    team_secrets = state.secrets.setdefault(cmd.team, {})
    old = team_secrets.get(cmd.name)
    if old is None and len(team_secrets) >= state.limits.secrets_per_team_max:
        return {"error": "quota", "limit": "secrets", "detail": f"at most {state.limits.secrets_per_team_max} "
                "secrets per team"}
    entry = team_secrets[cmd.name] = {"sealed": cmd.sealed, "created_ms": old["created_ms"] if old else state.now_ms,
                                      "updated_ms": state.now_ms, "version": old["version"] + 1 if old else 1}
    return {"ok": True, "created": old is None, **{k: v for k, v in entry.items() if k != "sealed"}}


def delete_secret(state: State, cmd: DeleteSecret) -> Result:
    if error := _team_scope(cmd, cmd.team):
        return error
    team_secrets = state.secrets.get(cmd.team) if isinstance(cmd.team, str) else None
    if not team_secrets or not isinstance(cmd.name, str) or team_secrets.pop(cmd.name, None) is None:
        return {"error": "not_found", "detail": f"no secret {cmd.name!r}"}
    if not team_secrets:
        del state.secrets[cmd.team]
        forget_team_if_gone(state, cmd.team)
    return {"ok": True}


def _team_scope(cmd: Command, team: str) -> Result | None:
    if not is_admin(cmd.actor) and cmd.actor.get("team") != team:
        return {"error": "forbidden", "detail": "a key may change only its own team's secrets"}
    return None


def invalid(field: str, message: str) -> Result:
    """A rejected command naming the field at fault (the API answers 422 with it)."""
    return {"error": "invalid", "detail": f"{field}: {message}", "errors": [{"field": field, "message": message}]}


# -- audit ---------------------------------------------------------------------


def audit(state: State, cmd: Command, result: Result) -> None:
    """One record per command an API user proposed: who, from where, what, when, and the result."""
    actor = cmd.actor
    state.audit_seq += 1
    state.audit.append({
        "seq": state.audit_seq, "at_ms": state.now_ms, "key": str(actor.get("key", ""))[:64],
        "team": str(actor.get("team", ""))[:64], "role": str(actor.get("role", ""))[:16],
        "remote": str(actor.get("remote", ""))[:64], "action": type(cmd).__name__,
        "target": _target(cmd), "result": result.get("error", "ok"),
    })


def _target(cmd: Command) -> str:
    if isinstance(getattr(cmd, "spec", None), dict):
        return str(cmd.spec.get("id", ""))[:200]  # type: ignore[attr-defined]
    if isinstance(getattr(cmd, "specs", None), list):
        return f"{len(cmd.specs)} jobs"  # type: ignore[attr-defined]
    if isinstance(cmd, PutSecret | DeleteSecret):
        return f"{cmd.team}/{cmd.name}"[:200]
    for name in ("job_id", "fire_id", "key_id", "team", "node_id"):
        value = getattr(cmd, name, None)
        if isinstance(value, str):
            return value[:200]
    return ""
