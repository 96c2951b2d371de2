"""What one delivery needs from the replicated state, and its secrets opened.

The executor reads the view under the state's lock together with the verdict (one
read: both see the same state); sealed secrets are opened afterwards, outside the
lock. The webhook is scanned for {{secrets/NAME}} references here only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from schedb import secretbox
from schedb.fsm import tenancy
from schedb.fsm.core import State


class DeliveryView(NamedTuple):
    spec: dict[str, Any]
    team: str
    team_limit: int  # the team's concurrent_webhooks quota
    referenced: bool  # the webhook references secrets
    sealed: dict[str, bytes]  # the referenced secrets the team has, sealed


def delivery_view(state: State, job_id: str) -> DeliveryView | None:
    """None when the job is gone."""
    job = state.jobs.get(job_id)
    if job is None:
        return None
    team = job["team"]
    names = secretbox.references(job["spec"]["webhook"])
    team_secrets = state.secrets.get(team, {})
    sealed = {name: team_secrets[name]["sealed"] for name in names if name in team_secrets}
    return DeliveryView(job["spec"], team, tenancy.quota(state, team)["concurrent_webhooks"], bool(names), sealed)


def resolve_secrets(box: secretbox.SecretBox | None, view: DeliveryView) -> tuple[dict[str, Any], list[str]]:
    """The spec with {{secrets/NAME}} replaced, and the plain values (to mask them).
    Raises MissingSecret, SecretUndecryptable, or ValueError when this node has no key."""
    spec, team, sealed = view.spec, view.team, view.sealed
    if not view.referenced:
        return spec, []
    if box is None:
        raise ValueError("this node has no secrets key (secrets.key_file or SCHEDB_SECRETS_KEY)")

    def lookup(name: str) -> str:
        return box.open(team, name, sealed[name])  # KeyError: resolve() reports MissingSecret

    webhook, values = secretbox.resolve(spec["webhook"], lookup)
    return {**spec, "webhook": webhook}, values
