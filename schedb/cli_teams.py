"""`schedb keys|secrets|teams …`: API keys, team secrets, usage and quotas (clusters with auth on)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from schedb.cli_client import ApiError, call, print_table

QUOTAS = ("max_jobs", "fires_per_minute", "concurrent_webhooks", "api_rps")
Client = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_team_commands(sub: Any, client: Client) -> None:
    keys = sub.add_parser("keys", help="API keys (admin)").add_subparsers(required=True, metavar="ACTION")
    create = client(keys.add_parser("create", help="create a key; its token is printed once"))
    create.add_argument("--team", required=True)
    create.add_argument("--role", required=True, choices=("admin", "operator", "viewer"))
    create.add_argument("--name", default="", help="a label, e.g. who or what uses the key")
    create.set_defaults(func=_keys_create)
    client(keys.add_parser("ls", help="list keys")).set_defaults(func=_keys_ls)
    revoke = client(keys.add_parser("revoke", help="revoke a key (every node refuses it once applied)"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_keys_revoke)

    secrets = sub.add_parser("secrets", help="team secrets").add_subparsers(required=True, metavar="ACTION")
    put = client(secrets.add_parser("set", help="create or replace a secret; the value is read from stdin"))
    put.add_argument("name")
    put.set_defaults(func=_secrets_set)
    client(secrets.add_parser("ls", help="list secret names")).set_defaults(func=_secrets_ls)
    remove = client(secrets.add_parser("rm", help="delete a secret"))
    remove.add_argument("name")
    remove.set_defaults(func=_secrets_rm)

    teams = sub.add_parser("teams", help="team usage and quotas").add_subparsers(required=True, metavar="ACTION")
    usage = client(teams.add_parser("usage", help="fires, attempts, webhook time, bytes, throttled"))
    usage.add_argument("team")
    usage.set_defaults(func=_teams_usage)
    quota = client(teams.add_parser("quota", help="set quotas, e.g. fires_per_minute=600 (default: back to config)"))
    quota.add_argument("team")
    quota.add_argument("settings", nargs="+", metavar="NAME=VALUE")
    quota.set_defaults(func=_teams_quota)


def _keys_create(args: argparse.Namespace) -> None:
    key = call(args, "POST", "/api/v1/keys", {"team": args.team, "role": args.role, "name": args.name})
    if args.json:
        print(json.dumps(key, indent=2))
        return
    print(f"key {key['id']} ({key['role']} of team {key['team']}); the token is shown only now:\n{key['key']}")


def _keys_ls(args: argparse.Namespace) -> None:
    keys = call(args, "GET", "/api/v1/keys")["keys"]
    rows = [[k["id"], k["team"], k["role"], k["name"] or "-", k["created_at"], k["revoked_at"] or "-"] for k in keys]
    print_table(args, keys, rows, ["ID", "TEAM", "ROLE", "NAME", "CREATED", "REVOKED"])


def _keys_revoke(args: argparse.Namespace) -> None:
    call(args, "DELETE", f"/api/v1/keys/{args.key_id}")
    print(f"revoked {args.key_id}")


def _secrets_set(args: argparse.Namespace) -> None:
    value = getpass.getpass(f"value of {args.name}: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    secret = call(args, "POST", "/api/v1/secrets", {"name": args.name, "value": value})
    print(json.dumps(secret, indent=2) if args.json else f"stored {secret['team']}/{secret['name']} "
          f"(version {secret['version']})")


def _secrets_ls(args: argparse.Namespace) -> None:
    rows = call(args, "GET", "/api/v1/secrets")["secrets"]
    print_table(args, rows, [[r["name"], str(r["version"]), r["updated_at"]] for r in rows],
                ["NAME", "VERSION", "UPDATED"])


def _secrets_rm(args: argparse.Namespace) -> None:
    call(args, "DELETE", f"/api/v1/secrets/{args.name}")
    print(f"deleted {args.name}")


def _teams_usage(args: argparse.Namespace) -> None:
    data = call(args, "GET", f"/api/v1/teams/{args.team}/usage")
    limits = {"jobs": "max_jobs", "fires_this_minute": "fires_per_minute"}  # the quota each figure meets
    rows = [[name, str(value), str(data["quotas"].get(limits.get(name, ""), "-"))] for name, value in
            [*data["usage"].items(), ("jobs", data["jobs"]), ("fires_this_minute", data["fires_this_minute"])]]
    print_table(args, data, rows, ["USAGE", "VALUE", "QUOTA"])


def _teams_quota(args: argparse.Namespace) -> None:
    body: dict[str, int | None] = {}
    for setting in args.settings:
        name, _, value = setting.partition("=")
        if name not in QUOTAS or not (value.isdigit() or value == "default"):
            raise ApiError(f"{setting!r}: use NAME=NUMBER or NAME=default, NAME one of {', '.join(QUOTAS)}")
        body[name] = None if value == "default" else int(value)
    data = call(args, "PUT", f"/api/v1/teams/{args.team}/quotas", body)
    print_table(args, data, [[k, str(v)] for k, v in data["quotas"].items()], ["QUOTA", "VALUE"])
