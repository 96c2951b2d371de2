"""SIGKILL of the leader: fires keep going out on time from the followers' lookahead,
and nothing is lost or committed twice."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, NodeProc, Receiver
from schedb.timefmt import ms_to_rfc3339
from tests.integration.workload import (
    JOBS,
    assert_every_second,
    busiest_follower,
    delivered_seconds,
    load_jobs,
    pause_jobs,
    scheduled_ms,
)


@pytest.fixture
def cluster(own_cluster: Cluster) -> Cluster:
    """Every test here kills nodes: each gets a cluster of its own."""
    return own_cluster


def start_hanging_at_most_once(cluster: Cluster, receiver: Receiver, job_id: str,
                               timeout_s: float) -> tuple[dict, NodeProc]:
    """An at-most-once one-shot whose webhook hangs: (its delivery, the node running it)."""
    at = ms_to_rfc3339(int((time.time() + 2) * 1000))
    body = {"id": job_id, "schedule": f"@at {at}", "delivery": "at_most_once", "retry": {"max_attempts": 3},
            "webhook": {"url": receiver.url + "?hang=30", "timeout_s": timeout_s}}
    assert http("POST", cluster.leader().url + "/api/v1/jobs", body)[0] == 201
    deadline = time.monotonic() + 10
    while not [d for d in receiver.deliveries() if d["job_id"] == job_id] and time.monotonic() < deadline:
        time.sleep(0.1)
    (first,) = [d for d in receiver.deliveries() if d["job_id"] == job_id]
    return first, next(n for n in cluster.nodes if n.node_id == first["node"])


def test_leader_sigkill_loses_and_doubles_nothing(cluster: Cluster, receiver: Receiver) -> None:
    old_leader = cluster.leader()
    survivor = next(n for n in cluster.nodes if n is not old_leader)
    load_jobs(receiver, "fo", survivor.url)
    time.sleep(3.0)
    killed_ms = int(time.time() * 1000)
    cluster.stop([old_leader], sig=signal.SIGKILL)
    time.sleep(6.0)  # longer than the lookahead: the new leader must have taken over dispatch
    new_leader = cluster.leader()
    assert new_leader is not old_leader
    cluster.start([old_leader])
    cluster.wait_ready()
    time.sleep(3.0)
    pause_jobs(survivor.url, "fo")
    time.sleep(2.0)

    deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("fo-")]
    doubled = [f for f, n in Counter(d["fire_id"] for d in deliveries).items() if n > 1]
    assert doubled == [], f"fires delivered twice around the leader's death: {doubled}"
    by_job = delivered_seconds(deliveries)
    assert_every_second(by_job)
    assert all(max(seconds) > killed_ms + 8000 for seconds in by_job.values()), "a job stopped after the kill"
    around_kill = [d["arrival_ms"] - scheduled_ms(d) for d in deliveries
                   if killed_ms - 1000 <= scheduled_ms(d) <= killed_ms + 5000]
    assert around_kill and max(around_kill) < 1000, f"fires were late around the kill: {max(around_kill)} ms"

    delivered = {(d["fire_id"], d["attempt"]) for d in deliveries}
    for node in cluster.nodes:
        committed: list[tuple[str, int]] = []
        for job_id in by_job:
            rows = http("GET", f"{node.url}/api/v1/jobs/{job_id}/executions?limit=1000")[2]["executions"]
            committed += [(r["fire_id"], r["attempt"]) for r in rows]
        assert len(committed) == len(set(committed)), f"{node.node_id}: an outcome was committed twice"
        assert set(committed) == delivered, f"{node.node_id}: {len(delivered - set(committed))} uncommitted"


def test_follower_sigkill_hands_its_fires_to_the_other_follower(cluster: Cluster, receiver: Receiver) -> None:
    leader = cluster.leader()
    load_jobs(receiver, "fk", leader.url)
    time.sleep(3.0)
    victim = busiest_follower(cluster, receiver, "fk-")
    survivor = next(n for n in cluster.nodes if n is not leader and n is not victim)
    killed_ms = int(time.time() * 1000)
    cluster.stop([victim], sig=signal.SIGKILL)
    time.sleep(10.0)
    pause_jobs(leader.url, "fk")
    deadline = time.monotonic() + 30
    while cluster.status(leader)["active_fires"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.status(leader)["active_fires"] == 0, "a fire was left without a committed outcome"

    deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("fk-")]
    after = [d for d in deliveries if scheduled_ms(d) > killed_ms + 6000]
    assert after and {d["node"] for d in after} == {survivor.node_id}
    live = [n for n in cluster.nodes if n is not victim]
    for node in live:
        succeeded = {f"fk-{i:02d}": {scheduled_ms(r) for r in http(
            "GET", f"{node.url}/api/v1/jobs/fk-{i:02d}/executions?limit=1000")[2]["executions"]
            if r["status"] == "succeeded"} for i in range(JOBS)}
        assert_every_second(succeeded, f"committed as a success on {node.node_id}")
        assert all(max(seconds) > killed_ms + 8000 for seconds in succeeded.values())
    moved = [d for d in deliveries if d["attempt"] > 1]
    lateness = [d["arrival_ms"] - scheduled_ms(d) for d in moved]
    print(f"\nfollower kill: {len(moved)} fires moved, lateness max {max(lateness, default=0)} ms")


def test_at_most_once_fire_is_never_delivered_twice_when_its_executor_dies(
        cluster: Cluster, receiver: Receiver) -> None:
    leader = cluster.leader()
    first, executor = start_hanging_at_most_once(cluster, receiver, "amo", timeout_s=60)
    cluster.stop([executor], sig=signal.SIGKILL)  # mid-request: the outcome is unknown
    time.sleep(10.0)  # past reassign_after_s: the leader deals with the executor's fires
    assert [d["fire_id"] for d in receiver.deliveries() if d["job_id"] == "amo"] == [first["fire_id"]]
    rows = http("GET", leader.url + "/api/v1/jobs/amo/executions")[2]["executions"]
    assert [(r["status"], r["reason"]) for r in rows] == [("unknown", "executor_lost")]
    letters = http("GET", leader.url + "/api/v1/dlq?job_id=amo")[2]["dead_letters"]
    assert [letter["last_status"] for letter in letters] == ["unknown"]


def test_sigterm_hands_a_followers_fires_back_and_exits_cleanly(cluster: Cluster, receiver: Receiver) -> None:
    leader = cluster.leader()
    load_jobs(receiver, "st", leader.url)
    time.sleep(3.0)
    victim = busiest_follower(cluster, receiver, "st-")
    term_ms = int(time.time() * 1000)
    cluster.stop([victim])  # SIGTERM, and wait for the process to exit
    assert victim.proc is not None and victim.proc.returncode == 0
    time.sleep(4.0)
    cluster.start([victim])
    cluster.wait_ready([victim])
    time.sleep(3.0)
    pause_jobs(leader.url, "st")
    time.sleep(2.0)

    deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("st-")]
    assert_every_second(delivered_seconds(deliveries))
    around = [d["arrival_ms"] - scheduled_ms(d) for d in deliveries if term_ms <= scheduled_ms(d) <= term_ms + 5000]
    assert around and max(around) < 1000, f"handed-back fires were late: {max(around)} ms"
    statuses = Counter(r["status"] for i in range(JOBS) for r in
                       http("GET", f"{leader.url}/api/v1/jobs/st-{i:02d}/executions?limit=1000")[2]["executions"])
    assert set(statuses) == {"succeeded"}, statuses


def test_at_most_once_fire_is_not_called_again_by_its_restarted_executor(
        cluster: Cluster, receiver: Receiver) -> None:
    leader = cluster.leader()
    first, executor = start_hanging_at_most_once(cluster, receiver, "amo-back", timeout_s=3)
    cluster.stop([executor], sig=signal.SIGKILL)  # mid-request, and back at once: before any fire moves
    cluster.start([executor])
    cluster.wait_ready([executor])
    deadline = time.monotonic() + 40  # the lease: timeout_s + lease grace, then the leader's scan
    rows: list[dict] = []
    while time.monotonic() < deadline and not rows:
        rows = http("GET", leader.url + "/api/v1/jobs/amo-back/executions")[2]["executions"]
        time.sleep(0.5)
    assert [(r["status"], r["reason"]) for r in rows] == [("unknown", "executor_lost")]
    assert [d["fire_id"] for d in receiver.deliveries() if d["job_id"] == "amo-back"] == [first["fire_id"]]
