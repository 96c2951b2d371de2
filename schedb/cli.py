"""The `schedb` command: run a node, or talk to a node's HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from schedb.cli_client import ApiError, call, client_options, print_table
from schedb.cli_teams import add_team_commands

MEMBERSHIP_TIMEOUT_S = 60.0  # a removal waits for the member to drain (up to 10 s) and a commit


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schedb", description="Raft-replicated cron and webhook scheduler")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    node = sub.add_parser("node", help="run one node")
    node.add_argument("--config", required=True, help="the node's TOML config file")
    node.set_defaults(func=_run_node)

    jobs = sub.add_parser("jobs", help="manage jobs").add_subparsers(required=True, metavar="ACTION")
    add = client_options(jobs.add_parser("add", help="create a job"))
    add.add_argument("--id")
    add.add_argument("--schedule", required=True, help="cron, @every 10s, @at 2026-12-01T10:00:00Z …")
    add.add_argument("--webhook", required=True, help="the webhook URL")
    add.add_argument("--timezone", default="UTC")
    add.add_argument("--method", default="POST")
    add.add_argument("--paused", action="store_true")
    add.set_defaults(func=_jobs_add)
    client_options(jobs.add_parser("ls", help="list jobs")).set_defaults(func=_jobs_ls)
    for name, func in (("show", _jobs_show), ("rm", _jobs_rm), ("pause", _jobs_pause), ("resume", _jobs_resume),
                       ("trigger", _jobs_trigger)):
        p = client_options(jobs.add_parser(name, help=f"{name} a job"))
        p.add_argument("job_id")
        p.set_defaults(func=func)

    cluster = sub.add_parser("cluster", help="cluster information").add_subparsers(required=True, metavar="ACTION")
    client_options(cluster.add_parser("status", help="leader, members, log index")).set_defaults(func=_cluster_status)
    member_add = client_options(cluster.add_parser("add", help="add a running node (started with raft.join = true)"))
    member_add.add_argument("raft_addr", help="the new node's raft.listen, host:port")
    member_add.set_defaults(func=_cluster_add)
    member_rm = client_options(cluster.add_parser("remove", help="drain a member and remove it from the cluster"))
    member_rm.add_argument("member", help="node id or raft address")
    member_rm.set_defaults(func=_cluster_remove)

    add_team_commands(sub, client_options)  # keys, secrets, teams: the multi-tenant part
    return parser


def _run_node(args: argparse.Namespace) -> int:
    from schedb.config import ConfigError, load_config
    from schedb.serve import run_node

    try:
        run_node(load_config(args.config))
    except ConfigError as exc:  # also raised at start-up, e.g. by TLS files that cannot be loaded
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return 0


def _job_rows(jobs: list[dict[str, Any]]) -> list[list[str]]:
    return [[j["id"], j["schedule"] or "after " + ",".join(j["depends_on"]), j["timezone"],
             "paused" if j["paused"] else "active",
             j["next_fire_at"] or "-", j["webhook"]["url"]] for j in jobs]


JOB_HEADER = ["ID", "SCHEDULE", "TZ", "STATE", "NEXT FIRE", "URL"]


def _jobs_add(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"schedule": args.schedule, "timezone": args.timezone, "paused": args.paused,
                            "webhook": {"url": args.webhook, "method": args.method}}
    if args.id:
        body["id"] = args.id
    job = call(args, "POST", "/api/v1/jobs", body)
    print_table(args, job, _job_rows([job]), JOB_HEADER)


def _jobs_ls(args: argparse.Namespace) -> None:
    jobs: list[dict[str, Any]] = []
    after = ""
    while True:
        page = call(args, "GET", f"/api/v1/jobs?limit=1000&after={urllib.request.quote(after)}")
        jobs.extend(page["jobs"])
        if not page["next_after"]:
            break
        after = page["next_after"]
    print_table(args, jobs, _job_rows(jobs), JOB_HEADER)


def _jobs_show(args: argparse.Namespace) -> None:
    job = call(args, "GET", f"/api/v1/jobs/{args.job_id}")
    runs = call(args, "GET", f"/api/v1/jobs/{args.job_id}/executions?limit=10")["executions"]
    if args.json:
        print(json.dumps({"job": job, "executions": runs}, indent=2))
        return
    print_table(args, job, _job_rows([job]), JOB_HEADER)
    print()
    rows = [[r["scheduled_at"], str(r["attempt"]), r["node"], r["status"], str(r["http_status"] or "-"),
             f"{r['duration_ms']} ms"] for r in runs]
    print_table(args, runs, rows, ["SCHEDULED", "ATTEMPT", "NODE", "STATUS", "HTTP", "DURATION"])


def _jobs_rm(args: argparse.Namespace) -> None:
    call(args, "DELETE", f"/api/v1/jobs/{args.job_id}")
    print(f"deleted {args.job_id}")


def _set_paused(args: argparse.Namespace, paused: bool) -> None:
    job = call(args, "POST", f"/api/v1/jobs/{args.job_id}/{'pause' if paused else 'resume'}")
    print_table(args, job, _job_rows([job]), JOB_HEADER)


def _jobs_pause(args: argparse.Namespace) -> None:
    _set_paused(args, True)


def _jobs_resume(args: argparse.Namespace) -> None:
    _set_paused(args, False)


def _jobs_trigger(args: argparse.Namespace) -> None:
    result = call(args, "POST", f"/api/v1/jobs/{args.job_id}/trigger")
    print(json.dumps(result, indent=2) if args.json else f"triggered {result['fire_id']}")


def _cluster_status(args: argparse.Namespace) -> None:
    status = call(args, "GET", "/api/v1/cluster")
    rows = [[m["node_id"] or "?", m["role"], m["raft_addr"], m["http_addr"] or "-",
             "self" if m["self"] else ("yes" if m["connected"] else "no"), str(m["jobs_assigned"]),
             str(m["active_fires"])] for m in status["members"]]
    print_table(args, status, rows, ["NODE", "ROLE", "RAFT", "HTTP", "CONNECTED", "JOBS", "FIRES"])
    if not args.json:
        print(f"\nleader: {status['leader']['node_id']}  term: {status['term']}  "
              f"commit index: {status['commit_index']}  jobs: {status['jobs']}")


def _cluster_add(args: argparse.Namespace) -> None:
    result = call(args, "POST", "/api/v1/cluster/members", {"raft_addr": args.raft_addr},
                     MEMBERSHIP_TIMEOUT_S)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    registered = result["node_id"] or "not registered yet (check its log)"
    print(f"added {result['added']} as {registered}; members: {', '.join(result['members'])}")


def _cluster_remove(args: argparse.Namespace) -> None:
    result = call(args, "DELETE", f"/api/v1/cluster/members/{urllib.request.quote(args.member, safe='')}",
                     timeout_s=MEMBERSHIP_TIMEOUT_S)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    how = (f"drained, {result['drain']['handed_back']} fires handed back" if result["drained"]
           else "not reachable, its fires move after scheduler.reassign_after_s")
    print(f"removed {result['removed']} ({how}); members: {', '.join(result['members'])}")
    print("stop its process now: it no longer belongs to the cluster")
