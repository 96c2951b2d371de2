"""Checks of a job's webhook that need the network or the team: where it may go (the egress
policy, after DNS) and which secrets it references. Run at create and update; delivery
checks the target again (executor), since DNS and secrets change."""

from __future__ import annotations

from typing import Any

from schedb import secretbox
from schedb.api.problems import Problem
from schedb.egress import EgressRefused
from schedb.fsm import queries
from schedb.node import Node


async def check_webhook(node: Node, spec: dict[str, Any], team: str) -> None:
    webhook = spec["webhook"]
    errors = secretbox.reference_errors(webhook)
    names = secretbox.references(webhook)
    if names and node.secret_box is None:
        errors.append({"field": "webhook", "message": "references a secret, but this cluster has no secrets key "
                       "(secrets.key_file or SCHEDB_SECRETS_KEY)"})
    elif names:
        known = node.replica.read(queries.secret_names, team)
        errors += [{"field": "webhook", "message": f"secret {name!r} does not exist in team {team!r}"}
                   for name in sorted(names - known)]
    try:
        await node.egress.check_url(webhook["url"])
    except EgressRefused as exc:
        errors.append({"field": "webhook.url", "message": str(exc)})
    if errors:
        raise Problem(422, "Invalid job", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      kind="invalid", errors=errors)
