"""100 jobs firing every second through a real cluster and receiver (acceptance 3 of issue 3)."""

from __future__ import annotations

import json
import os
import re
import statistics
import time
import urllib.request
from collections import Counter
from pathlib import Path

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.timefmt import rfc3339_to_ms

JOBS = 100
RUN_S = 20


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metrics(url: str) -> dict[str, float]:
    """Samples of a node's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_every_fire_delivered_once_by_followers_and_committed_everywhere(
        cluster: Cluster, receiver: Receiver) -> None:
    leader = cluster.leader()
    before = {n.node_id: metrics(n.url) for n in cluster.nodes}
    followers = {n.node_id for n in cluster.nodes if n is not leader}
    created: dict[str, int] = {}
    create_ms: list[float] = []
    for i in range(JOBS):
        node = cluster.nodes[i % 3]
        t0 = time.perf_counter()
        code, _, job = http("POST", node.url + "/api/v1/jobs",
                            {"id": f"every-{i:03d}", "schedule": "@every 1s", "webhook": {"url": receiver.url}})
        create_ms.append((time.perf_counter() - t0) * 1000)
        assert code == 201, job
        created[job["id"]] = rfc3339_to_ms(job["created_at"])
    time.sleep(RUN_S)
    for job_id in created:  # pausing drops fires that are not due yet
        assert http("PATCH", f"{leader.url}/api/v1/jobs/{job_id}", {"paused": True})[0] == 200
    paused_ms = int(time.time() * 1000)
    time.sleep(2.0)  # let the last deliveries' outcomes commit
    assert cluster.leader() is leader, "the leader changed during the run"

    deliveries = receiver.deliveries()
    by_job: dict[str, set[int]] = {job_id: set() for job_id in created}
    for d in deliveries:
        scheduled_ms = int(d["fire_id"].rsplit(":", 1)[1])
        assert d["node"] in followers, d
        assert d["idempotency_key"] == d["fire_id"]
        assert rfc3339_to_ms(d["scheduled_at"]) == scheduled_ms and scheduled_ms % 1000 == 0
        assert d["arrival_ms"] >= scheduled_ms, f"fired early: {d}"
        by_job[d["job_id"]].add(scheduled_ms)
    counts = Counter((d["fire_id"], d["attempt"]) for d in deliveries)
    assert max(counts.values()) == 1, "a fire was delivered twice"
    assert set(Counter(d["node"] for d in deliveries)) == followers, "both followers get a share"

    for job_id, seconds in by_job.items():  # no gap from the first second after creation
        first = (created[job_id] // 1000 + 1) * 1000
        expected = set(range(first, max(seconds) + 1, 1000))
        assert seconds == expected, f"{job_id}: missing {sorted(expected - seconds)}"
        assert max(seconds) >= paused_ms - 3000, f"{job_id} stopped firing early"

    delivered = {(d["fire_id"], d["attempt"], d["node"]) for d in deliveries}
    for node in cluster.nodes:
        committed = set()
        for job_id in created:
            rows = http("GET", f"{node.url}/api/v1/jobs/{job_id}/executions?limit=1000")[2]["executions"]
            committed |= {(r["fire_id"], r["attempt"], r["node"]) for r in rows}
            assert all(r["status"] == "succeeded" for r in rows)
        assert committed == delivered, (f"{node.node_id}: committed, never delivered: {sorted(committed - delivered)}; "
                                        f"delivered, never committed: {sorted(delivered - committed)}")

    _check_metrics_moved(cluster, leader.node_id, before, len(deliveries))

    delays = [d["arrival_ms"] - int(d["fire_id"].rsplit(":", 1)[1]) for d in deliveries]
    report = {"deliveries": len(deliveries), "delay_ms_p50": _percentile(delays, 0.5),
              "delay_ms_p99": _percentile(delays, 0.99), "delay_ms_max": max(delays),
              "create_ms_p50": round(statistics.median(create_ms), 1),
              "create_ms_p99": round(_percentile([int(x * 10) for x in create_ms], 0.99) / 10, 1)}
    print("\nfiring report:", json.dumps(report))
    out = os.environ.get("SCHEDB_TEST_REPORT")
    if out:
        Path(out).write_text(json.dumps(report))


def _check_metrics_moved(cluster: Cluster, leader_id: str, before: dict[str, dict[str, float]],
                         delivered: int) -> None:
    succeeded = 'schedb_executor_fires_total{outcome="succeeded"}'
    executed = 0.0
    for node in cluster.nodes:
        after = metrics(node.url)
        assert after["schedb_jobs"] - before[node.node_id]["schedb_jobs"] == JOBS
        assert after["schedb_cluster_outcomes_committed_total"] >= delivered
        assert after[f'schedb_raft_role{{role="{"leader" if node.node_id == leader_id else "follower"}"}}'] == 1
        created = 'schedb_api_requests_total{method="POST",route="/api/v1/jobs",status="201"}'
        assert after.get(created, 0) - before[node.node_id].get(created, 0) in (33, 34)  # a third of the creates
        ran = after.get(succeeded, 0) - before[node.node_id].get(succeeded, 0)
        assert ran == 0 if node.node_id == leader_id else ran > 0
        assert after["schedb_fire_delay_seconds_count"] == after.get(succeeded, 0)
        executed += ran
    assert executed == delivered


def test_the_grafana_dashboard_queries_only_metrics_a_node_exports(cluster: Cluster) -> None:
    dashboard = (Path(__file__).parents[2] / "ops" / "grafana" / "schedb-dashboard.json").read_text()
    queried = set(re.findall(r"schedb_[a-z_]+", dashboard))
    with urllib.request.urlopen(cluster.nodes[0].url + "/metrics", timeout=10) as resp:
        families = [line.split()[2] for line in resp.read().decode().splitlines() if line.startswith("# TYPE")]

    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|count|sum)$", "", name)

    exported = {family(name) for name in families}
    unknown = {name for name in queried if family(name) not in exported}
    assert queried and not unknown, f"the dashboard queries metrics no node exports: {sorted(unknown)}"
