"""Operating a running cluster: adding and removing members, and a rolling restart by
SIGTERM, all under a steady workload that must lose, double and delay nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

from devkit.devcluster import http, wait_ready
from devkit.harness import Cluster, NodeProc, Receiver
from tests.integration.workload import (
    JOBS,
    assert_every_second,
    assert_once_each,
    delivered_seconds,
    load_jobs,
    pause_jobs,
    scheduled_ms,
)


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "schedb", *args, "--json"], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for_deliveries_from(receiver: Receiver, node: NodeProc, prefix: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(d["node"] == node.node_id for d in receiver.deliveries() if d["job_id"].startswith(prefix)):
            return
        time.sleep(0.2)
    raise AssertionError(f"{node.node_id} delivered nothing")


def test_added_member_takes_a_share_and_removed_members_hand_theirs_on(
        own_cluster: Cluster, receiver: Receiver) -> None:
    cluster = own_cluster
    leader = cluster.leader()
    load_jobs(receiver, "mb", leader.url)
    newcomer = cluster.new_member()
    added = cli("cluster", "add", f"127.0.0.1:{newcomer.raft_port}", "--url", cluster.nodes[0].url)
    assert added["node_id"] == newcomer.node_id and len(added["members"]) == 4
    wait_ready([newcomer.url], 30)
    wait_for_deliveries_from(receiver, newcomer, "mb-")
    shares = {m["node_id"]: m["jobs_assigned"] for m in cluster.status(cluster.leader())["members"]}
    assert shares[newcomer.node_id] > 0 and sum(shares.values()) == JOBS, shares

    follower = next(n for n in cluster.followers() if n is not newcomer)
    removed = cli("cluster", "remove", follower.node_id, "--url", newcomer.url)
    removed_ms = int(time.time() * 1000)
    assert removed["drained"] and len(removed["members"]) == 3
    cluster.stop([follower])
    old_leader = cluster.leader()
    removed = cli("cluster", "remove", old_leader.node_id, "--url", old_leader.url)  # the leader steps down first
    assert removed["node_id"] == old_leader.node_id and len(removed["members"]) == 2
    cluster.stop([old_leader])
    time.sleep(6.0)  # past the lookahead: every fire now comes from the two that remain
    remaining = [n for n in cluster.nodes if n not in (follower, old_leader)]
    pause_jobs(remaining[0].url, "mb")
    time.sleep(2.0)

    deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("mb-")]
    assert_once_each(deliveries)
    assert_every_second(delivered_seconds(deliveries))
    assert not [d for d in deliveries if d["node"] == follower.node_id and scheduled_ms(d) > removed_ms]
    lateness = [d["arrival_ms"] - scheduled_ms(d) for d in deliveries]
    assert max(lateness) < 1000, f"a fire was late by {max(lateness)} ms"
    status = cluster.status(remaining[0])
    assert sorted(m["node_id"] for m in status["members"]) == sorted(n.node_id for n in remaining)


def test_rolling_sigterm_restart_loses_and_times_out_nothing(own_cluster: Cluster, receiver: Receiver) -> None:
    cluster = own_cluster
    load_jobs(receiver, "rr", cluster.nodes[0].url, "?hang=0.3")  # webhooks in flight at every SIGTERM
    time.sleep(3.0)
    for node in [*cluster.followers(), cluster.leader()]:
        cluster.stop([node])
        assert node.proc is not None and node.proc.returncode == 0, f"{node.node_id} did not exit cleanly"
        cluster.start([node])
        cluster.wait_ready()
        time.sleep(2.0)
    reader = cluster.leader()
    pause_jobs(reader.url, "rr")
    time.sleep(2.0)

    deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("rr-")]
    assert_once_each(deliveries)
    assert_every_second(delivered_seconds(deliveries))
    statuses = Counter(r["status"] for i in range(JOBS) for r in
                       http("GET", f"{reader.url}/api/v1/jobs/rr-{i:02d}/executions?limit=1000")[2]["executions"])
    assert set(statuses) == {"succeeded"}, statuses
