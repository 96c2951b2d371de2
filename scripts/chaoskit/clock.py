"""A node whose clock runs an hour ahead (Debian's faketime), with jobs created through it.

The promise: the cluster keeps firing on time; the skewed node stops executing and says so
(/ready), and what it proposes cannot move replicated time. Its own fires are not excused:
they must be delivered by the others, so the reconciliation treats it like any node.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaoskit.common import Ctx, FaultNotApplied, Measured, cluster_view, now_ms, restart
from chaoskit.ledger import create_job
from devkit.devcluster import get_json, wait_ready
from devkit.harness import Cluster, NodeProc, children_of

SKEW = ["faketime", "-f", "+1h"]  # FAKETIME_DONT_FAKE_MONOTONIC stays unset: it breaks time.sleep
SKEW_S = 3600
SKEW_TOLERANCE_S = 60
SKEWED_JOBS = 20
RUN_S = 20


def skewed_clock(ctx: Ctx) -> Measured:
    cluster = ctx.cluster
    victim = cluster.followers()[-1]
    plain = victim.prefix
    cluster.stop([victim])
    victim.prefix = [*SKEW, *plain]
    checks: dict[str, Any] = {"skewed node": victim.node_id}
    try:
        cluster.start([victim])
        node_pid = wrapped_pid(victim)
        wait_ready([victim.url], pids=[node_pid], path="/health")  # /ready may rightly refuse
        checks.update(_verify_skew(victim, node_pid))
        codes = Counter(create_job(ctx, victim.url, f"chaos-s{i:02d}", "@every 1s", 1000)
                        for i in range(SKEWED_JOBS))
        checks["jobs created through it (HTTP status: count)"] = dict(codes)
        checks.update(_watch(cluster, victim))
    finally:
        cluster.stop([victim])
        victim.prefix = plain
    restart(cluster, [victim])
    return {"checks": checks, "quorum_kept": True}


def _verify_skew(victim: NodeProc, node_pid: int) -> dict[str, str]:
    """The node's `date`, run in its own environment, and the clock its /health answers."""
    offset_s = env_clock_offset_s(node_pid)
    if abs(offset_s - SKEW_S) > SKEW_TOLERANCE_S:
        raise FaultNotApplied(f"{victim.node_id}'s environment gives `date` {offset_s:+.0f} s, not +{SKEW_S} s")
    out = {"`date` in its environment": f"{offset_s:+.0f} s"}
    health = get_json(victim.url + "/health")[1]
    if isinstance(health, dict) and "now_ms" in health:
        out["its /health clock"] = f"{(health['now_ms'] - now_ms()) / 1000:+.0f} s"
    return out


def _watch(cluster: Cluster, victim: NodeProc) -> dict[str, Any]:
    """Let the load run; meanwhile, what the skewed node says of itself and the leader of it."""
    answers: Counter[str] = Counter()
    measured: set[str] = set()
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        try:
            status, body = get_json(victim.url + "/ready")
            answers[f"{status} {body.get('reason', '')}".strip()] += 1
        except OSError:
            answers["no answer"] += 1
        leader = next((n for n in cluster.nodes if n is not victim and (cluster_view(n) or {}).get("role") == "leader"),
                      None)
        view = cluster_view(leader) if leader else None
        member = next((m for m in (view or {}).get("members", []) if m["node_id"] == victim.node_id), {})
        offset_ms = member.get("clock_offset_ms")
        measured.add("unmeasured" if offset_ms is None else f"{offset_ms / 1000:+.0f}")
        time.sleep(2)
    return {"its /ready answers": dict(answers),
            "leader's measured offset of it (s)": sorted(measured)}


# -- a node under a wrapper that forks ---------------------------------------------

def wrapped_pid(node: NodeProc, timeout_s: float = 10.0) -> int:
    """The node's own process: faketime forks it and waits, so NodeProc.pid is the wrapper's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = children_of(node.pid)
        if children:
            return children[0]
        time.sleep(0.05)
    raise FaultNotApplied(f"{node.node_id}: no process under its wrapper {node.pid}")


def env_clock_offset_s(pid: int) -> float:
    """`date`, run with pid's environment (LD_PRELOAD and FAKETIME), minus this clock."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    out = subprocess.run(["date", "+%s.%N"], env=env, capture_output=True, text=True, timeout=10, check=True)
    return float(out.stdout) - time.time()
