"""What every scenario shares: the cluster under load, its receiver and workload, and small waits."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.devcluster import http
from devkit.harness import Cluster, NodeProc, Receiver

# What a scenario measured: "elections" (seconds to a new leader), "commits_without_quorum",
# "excluded" (fire ids the scenario legitimately cancelled), "checks" (how the fault was seen
# to take effect), "quorum_kept" (a connected majority stayed up throughout: no fire may be
# missed), and anything else worth keeping in chaos.json.
Measured = dict[str, Any]


class FaultNotApplied(RuntimeError):
    """The fault did not take effect: the scenario proved nothing and fails the run."""


@dataclass
class Ctx:
    cluster: Cluster
    receiver: Receiver
    args: argparse.Namespace
    work: Path
    # job id -> (period ms, created ms): what the reconciliation expects to fire.
    jobs: dict[str, tuple[int, int]] = field(default_factory=dict)


def now_ms() -> int:
    return int(time.time() * 1000)


def cluster_view(node: NodeProc, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """The node's /api/v1/cluster, or None when it does not answer (frozen, down)."""
    try:
        status, _, body = http("GET", node.url + "/api/v1/cluster", timeout_s=timeout_s)
    except OSError:
        return None
    return body if status == 200 else None


def wait_new_leader(cluster: Cluster, old: NodeProc | None, timeout_s: float = 30.0) -> float:
    """Seconds until a node other than `old` says it leads."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        for node in cluster.nodes:
            view = None if node is old else cluster_view(node, 0.5)
            if view and view["role"] == "leader":
                return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"no new leader within {timeout_s:.0f} s")


def restart(cluster: Cluster, nodes: list[NodeProc]) -> None:
    cluster.start(nodes)
    cluster.wait_ready(nodes)
