"""Network partitions under load: the leader cut off from both followers, then, healed, one
follower cut off (chaoskit.firewall says how). Node-to-node traffic is cut, Raft and HTTP
(clock probes) alike; every node still reaches the receiver and answers this script, so a
node on the wrong side that kept firing would show up as doubled deliveries."""

from __future__ import annotations

import time
from typing import Any

from chaoskit.common import Ctx, FaultNotApplied, Measured, cluster_view, wait_new_leader
from devkit.firewall import Firewall
from devkit.harness import Cluster, NodeProc

# Well past the fence (3 s) and the re-assignment (5 s); a follower cut off for longer than the
# fence plus the misfire grace (13 s) leaves a heartbeat's worth of its fires to the misfire policy
# (schedb.dispatcher: the leader cannot know whether it delivered them).
PARTITION_S = 12.0
QUIET_S = 1.5  # what was in flight when the cut came may still commit


def partitions(ctx: Ctx) -> Measured:
    cluster = ctx.cluster
    firewall = Firewall(cluster)
    checks: dict[str, Any] = {"iptables": firewall.tool}
    firewall.install()
    try:
        leader = cluster.leader()
        firewall.isolate(leader, _others(cluster, leader))
        elected, cut_leader, leader_commits = _leader_cut_off(cluster, leader)
        checks.update(cut_leader)
        checks["packets dropped (leader cut off)"] = firewall.heal()
        checks["after healing, every node applied the log as of the heal in"] = _caught_up(cluster)
        cut_off_first, leader = leader, cluster.leader()
        # another node than the one just healed, when the election left one to choose
        follower = next(n for n in cluster.nodes if n not in (leader, cut_off_first))
        firewall.isolate(follower, _others(cluster, follower))
        cut_follower, follower_commits = _follower_cut_off(cluster, leader, follower)
        checks.update(cut_follower)
        checks["packets dropped (follower cut off)"] = firewall.heal()
        checks["after healing the follower, caught up in"] = _caught_up(cluster)
    finally:
        firewall.remove()
    return {"elections": [elected], "commits_without_quorum": leader_commits + follower_commits,
            "checks": checks, "quorum_kept": True}


def _others(cluster: Cluster, node: NodeProc) -> list[NodeProc]:
    return [n for n in cluster.nodes if n is not node]


def _commit_index(node: NodeProc) -> int:
    view = cluster_view(node, 2.0)
    if view is None:
        raise FaultNotApplied(f"{node.node_id} stopped answering its API during the partition")
    return int(view["commit_index"])


def _leader_cut_off(cluster: Cluster, leader: NodeProc) -> tuple[float, dict[str, Any], int]:
    """The majority must elect a leader of its own; the old one must commit nothing.
    Returns the seconds to the new leader, what was seen, and the commits on the cut-off side."""
    started = time.monotonic()
    majority = _others(cluster, leader)
    try:
        elected = wait_new_leader(cluster, leader, timeout_s=PARTITION_S)
    except RuntimeError as exc:
        raise FaultNotApplied(f"the majority side elected no leader: {exc}") from exc
    new_leader = _agreed_leader(majority, leader)
    time.sleep(max(0.0, QUIET_S - (time.monotonic() - started)))
    before = _commit_index(leader), _commit_index(majority[0])
    time.sleep(max(0.0, PARTITION_S - (time.monotonic() - started)))
    after = _commit_index(leader), _commit_index(majority[0])
    old_view = cluster_view(leader) or {}
    return elected, {
        "isolated leader": leader.node_id,
        "majority elected": f"{new_leader} in {elected:.2f} s",
        "isolated leader's role at the end": old_view.get("role"),
        "commits on the majority side": after[1] - before[1],
    }, after[0] - before[0]


def _agreed_leader(majority: list[NodeProc], old: NodeProc, timeout_s: float = 3.0) -> str:
    """The leader every node of the majority names, once they agree (not the cut-off one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        named = {(cluster_view(n) or {}).get("leader", {}).get("node_id") for n in majority}
        agreed = next(iter(named)) if len(named) == 1 else None
        if agreed and agreed != old.node_id:
            return str(agreed)
        if time.monotonic() > deadline:
            raise FaultNotApplied(f"the majority side does not agree on a new leader: {named}")
        time.sleep(0.05)


def _follower_cut_off(cluster: Cluster, leader: NodeProc, follower: NodeProc) -> tuple[dict[str, Any], int]:
    """The follower must lose its leader; the leader must keep its majority and stop counting it.
    Returns what was seen and the commits on the cut-off side."""
    started = time.monotonic()
    lost_after = _wait_leaderless(follower)
    time.sleep(max(0.0, QUIET_S - (time.monotonic() - started)))
    before = _commit_index(follower), _commit_index(leader)
    time.sleep(max(0.0, PARTITION_S - (time.monotonic() - started)))
    after = _commit_index(follower), _commit_index(leader)
    leader_view = cluster_view(leader) or {}
    member = next((m for m in leader_view.get("members", []) if m["node_id"] == follower.node_id), {})
    return {
        "isolated follower": follower.node_id,
        "it lost its leader after": f"{lost_after:.2f} s",
        "leader kept leading": leader_view.get("role") == "leader",
        "leader's view of it at the end": f"executor_alive={member.get('executor_alive')}, "
                                          f"last_ack_ms_ago={member.get('last_ack_ms_ago')}",
        "commits on the leader's side": after[1] - before[1],
    }, after[0] - before[0]


def _caught_up(cluster: Cluster, timeout_s: float = 60.0) -> str:
    """How long until every node has applied what the leader had committed when the cut
    healed. Not instant: a connection that was cut stays open (pysyncobj keeps it), and its
    queued data waits for TCP's next retransmission, backed off exponentially meanwhile."""
    started = time.monotonic()
    target = _commit_index(cluster.leader())
    while time.monotonic() - started < timeout_s:
        applied = [(cluster_view(n) or {}).get("last_applied", -1) for n in cluster.nodes]
        if min(applied) >= target:
            return f"{time.monotonic() - started:.1f} s"
        time.sleep(0.2)
    return f"NOT within {timeout_s:.0f} s"


def _wait_leaderless(node: NodeProc, timeout_s: float = 5.0) -> float:
    """Seconds until a cut-off follower no longer names a leader (it stands for election)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        view = cluster_view(node) or {}
        if view and (view.get("role") != "follower" or not view.get("leader", {}).get("node_id")):
            return time.monotonic() - started
        time.sleep(0.05)
    raise FaultNotApplied(f"{node.node_id} still follows a leader {timeout_s:.0f} s after being cut off")
