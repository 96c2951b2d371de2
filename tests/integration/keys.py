"""API keys for the tests that turn auth on: one config admin key per test process, the config
text that enables auth with it, and calls made with a key."""

from __future__ import annotations

import secrets
from typing import Any

from devkit.devcluster import http
from devkit.harness import Cluster

ADMIN_KEY = "sk_admin_" + secrets.token_urlsafe(24)
AUTH_ON = f'\n[auth]\nenabled = true\nadmin_key = "{ADMIN_KEY}"\n'


def call(method: str, url: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    status, _, answer = http(method, url, body, headers={"Authorization": f"Bearer {key}"} if key else {})
    return status, answer


def make_key(cluster: Cluster, team: str, role: str, name: str = "") -> dict[str, Any]:
    """A key of the team and role, made by the config's admin key; its token is in ["key"]."""
    status, key = call("POST", cluster.nodes[0].url + "/api/v1/keys", ADMIN_KEY,
                       {"team": team, "role": role, **({"name": name} if name else {})})
    assert status == 201, key
    return key
