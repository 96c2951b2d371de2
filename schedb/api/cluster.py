"""Cluster status, liveness and readiness."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schedb.api.context import NODE, json_response
from schedb.clock import wall_ms
from schedb.dispatcher import FOLLOWER_LAG_MAX
from schedb.fsm import queries
from schedb.node import Node


def cluster_status(node: Node) -> dict[str, Any]:
    """Per member: role, connection, last ack and log index as this node sees them, and its
    shard: the fires it holds now (`active_fires`) and the distinct jobs they belong to."""
    view = node.replica.view()
    config = node.config
    data = node.replica.read(queries.cluster_counts)
    by_raft = {n["raft_addr"]: node_id for node_id, n in data["nodes"].items()}
    live = set(node.replica.live_followers(config.scheduler.follower_alive_s, FOLLOWER_LAG_MAX))
    held, shard = data["fires_by_node"], data["jobs_by_node"]
    members = [{"node_id": config.node.id, "raft_addr": config.raft.listen, "http_addr": config.http.listen,
                "role": view.role, "self": True, "active_fires": held.get(config.node.id, 0),
                "jobs_assigned": shard.get(config.node.id, 0), "clock_offset_ms": 0}]
    for addr, peer in view.peers.items():
        node_id = by_raft.get(addr)
        members.append({
            "node_id": node_id, "raft_addr": addr,
            "http_addr": data["nodes"][node_id]["http_addr"] if node_id else None,
            "role": "leader" if addr == view.leader_addr else "follower", "self": False,
            "connected": peer["connected"], "match_index": peer["match_index"],
            "last_ack_ms_ago": peer["last_ack_ms_ago"],
            "executor_alive": addr in live if view.role == "leader" else None,
            "draining": bool(node_id and data["nodes"][node_id].get("draining")),
            "active_fires": held.get(node_id, 0) if node_id else 0,
            "jobs_assigned": shard.get(node_id, 0) if node_id else 0,
            # the member's clock minus this node's, measured over HTTP; None until measured
            "clock_offset_ms": node.clock.offset_ms(node_id) if node_id else None,
        })
    leader_id = config.node.id if view.role == "leader" else by_raft.get(view.leader_addr or "")
    return {
        "node_id": config.node.id, "role": view.role,
        "leader": {"node_id": leader_id, "raft_addr": view.leader_addr},
        "term": view.term, "commit_index": view.commit_index, "last_applied": view.last_applied,
        "log_len": view.log_len, "members": members, "jobs": data["jobs"],
        "active_fires": data["active_fires"], "pending_fires": data["pending_fires"],
        "dead_letters": data["dead_letters"], "counters": data["counters"],
        "executor": {"scheduled": node.executor.scheduled, "in_flight": node.executor.in_flight,
                     "workers": node.workers.status() if node.workers is not None else None},
        "circuits": node.breakers.circuits(),
        "clock": {"max_offset_ms": node.clock.max_offset_ms, "offset_from_leader_ms": node.clock.leader_offset_ms(),
                  "hold_reason": node.clock.hold_reason() or None},
    }


async def get_cluster(request: web.Request) -> web.Response:
    return json_response(cluster_status(request.app[NODE]))


async def health(request: web.Request) -> web.Response:
    """Liveness, and this node's wall clock: the other members measure their offsets from it."""
    node = request.app[NODE]
    return json_response({"status": "ok", "node_id": node.node_id, "now_ms": wall_ms(),
                          "clock_hold": node.clock_hold()})


# Replicated time reached this node recently: the leader ticks it every ~0.3 s.
LEADER_TIME_AGE_MS_MAX = 5_000
_NOT_READY_REASONS = {"caught_up": "catching_up", "has_leader": "no_leader", "registered": "not_registered",
                      "executor_running": "executor_stopped", "clock_in_bound": "clock_offset",
                      "leader_time_current": "leader_time_stale"}


async def ready(request: web.Request) -> web.Response:
    """Ready = the log is replayed and current, a leader is known, this node is registered, its
    clock agrees with the leader's (schedb.clockwatch), and the leader's time reaches it."""
    node = request.app[NODE]
    view = node.replica.view()
    clock_reason = node.clock.hold_reason()
    replicated_ms = node.replica.read(queries.replicated_now)
    checks = {"caught_up": view.ready, "has_leader": view.leader_addr is not None,
              "registered": node.is_registered(), "executor_running": node.executor_running(),
              "clock_in_bound": not clock_reason,
              "leader_time_current": wall_ms() - replicated_ms <= LEADER_TIME_AGE_MS_MAX}
    ok = all(checks.values())
    body: dict[str, Any] = {"ready": ok, "checks": checks, "role": view.role,
                            "clock_offset_from_leader_ms": node.clock.leader_offset_ms()}
    if not ok:
        failed = next(name for name, passed in checks.items() if not passed)
        body["reason"] = clock_reason if failed == "clock_in_bound" else _NOT_READY_REASONS[failed]
    return json_response(body, 200 if ok else 503)
