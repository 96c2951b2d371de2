"""Delivery worker processes (schedb.worker_pool) on three real nodes: every fire delivered once
through them; a worker SIGKILLed or frozen (SIGSTOP) mid-call loses no fire and calls no
at-most-once fire twice, and is replaced; workers go with their node."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.devcluster import http, pid_alive
from devkit.harness import Cluster, Receiver, children_of
from schedb.timefmt import ms_to_rfc3339
from tests.integration.workers_kit import (
    JOBS,
    TIMEOUT_S,
    check_each_recorded_none_twice,
    cluster_with_workers,
    executions,
    one_shots,
    worker_pids,
    workers_of,
)
from tests.integration.workload import wait_for


@pytest.fixture(scope="module")
def workers_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_with_workers(Path(tmp_path_factory.mktemp("workers")), 1) as cluster:
        yield cluster


def _calls_in_flight(cluster: Cluster, receiver: Receiver, prefix: str, sig: int) -> dict[str, list[int]]:
    """Create the one-shots, wait until every first call hangs at the receiver, then send `sig` to
    every node's worker; the workers it was sent to."""
    jobs = one_shots(prefix, receiver.url, int(time.time() * 1000) + 3000)
    code, _, answer = http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})
    assert code in (200, 201) and not answer.get("errors"), answer
    wait_for(lambda: sum(d["job_id"].startswith(prefix) for d in receiver.deliveries()) >= 2 * JOBS, 15,
             "every first call to arrive")
    pids = worker_pids(cluster)
    for node_pids in pids.values():
        for pid in node_pids:
            os.kill(pid, sig)
    return pids


def _check_no_fire_lost_or_doubled(cluster: Cluster, receiver: Receiver, prefix: str) -> None:
    for i in range(JOBS):
        amo, alo = f"{prefix}-amo-{i}", f"{prefix}-alo-{i}"
        # At most once: recorded failed as lost with its worker (then dead-lettered).
        rows = wait_for(lambda job=amo: executions(cluster, job), 20, f"{amo}'s record")
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed")], rows
        assert rows[0]["error"].startswith("worker_lost"), rows
        # At least once: tried again after the lost call, and delivered.
        rows = wait_for(lambda job=alo: [r for r in executions(cluster, job) if r["status"] == "succeeded"], 30,
                        f"{alo} delivered by a later attempt")
        assert rows[0]["attempt"] >= 2, rows
    time.sleep(1)  # counted once every retry has settled
    arrivals = Counter((d["job_id"], d["fire_id"]) for d in receiver.deliveries() if d["job_id"].startswith(prefix))
    for i in range(JOBS):
        assert [n for (job, _), n in arrivals.items() if job == f"{prefix}-amo-{i}"] == [1], arrivals
    letters = http("GET", cluster.nodes[1].url + "/api/v1/dlq?limit=100")[2]["dead_letters"]
    buried = {d["job_id"] for d in letters if d["job_id"].startswith(prefix)}
    assert buried == {f"{prefix}-amo-{i}" for i in range(JOBS)}


def _check_replaced(cluster: Cluster, old: dict[str, list[int]], timeout_s: float = 10) -> None:
    """Each node runs a new worker, its child, and counts the one that ended."""
    def replaced() -> bool:
        now = worker_pids(cluster)
        return all(len(now[n]) == 1 and not set(now[n]) & set(old[n]) for n in now)

    wait_for(replaced, timeout_s, "every node's worker replaced")
    for node in cluster.nodes:
        status = workers_of(cluster, node)
        assert status["exits"]["workers"] >= 1
        assert {w["pid"] for w in status["running"]} <= set(children_of(node.pid))
    assert not any(pid_alive(pid) for pids in old.values() for pid in pids)


def test_workers_deliver_every_fire_once(workers_cluster: Cluster, receiver: Receiver) -> None:
    cluster = workers_cluster
    jobs = [{"id": f"steady-{i}", "schedule": "@every 1s", "webhook": {"url": f"{receiver.url}?n={i}"}}
            for i in range(20)]
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    time.sleep(5)
    for job in jobs:
        assert http("DELETE", f"{cluster.nodes[0].url}/api/v1/jobs/{job['id']}")[0] == 204
    got = [d for d in receiver.deliveries() if d["job_id"].startswith("steady-")]
    assert len(got) >= 20 * 3
    assert max(Counter(d["fire_id"] for d in got).values()) == 1
    by_node = Counter(d["node"] for d in got)
    for node in cluster.nodes:
        (worker,) = workers_of(cluster, node)["running"]
        assert worker["pid"] in children_of(node.pid)
        assert worker["calls"] >= by_node[node.node_id], "every call went through the worker"
    assert by_node and set(by_node) <= {n.node_id for n in cluster.nodes}


def test_a_worker_killed_mid_call_loses_no_fire_and_calls_no_at_most_once_fire_twice(
        workers_cluster: Cluster, receiver: Receiver) -> None:
    killed = _calls_in_flight(workers_cluster, receiver, "killed", signal.SIGKILL)
    _check_replaced(workers_cluster, killed)
    _check_no_fire_lost_or_doubled(workers_cluster, receiver, "killed")


def test_a_frozen_worker_is_killed_before_its_calls_outlive_their_lease(
        workers_cluster: Cluster, receiver: Receiver) -> None:
    """SIGSTOP mid-call: the answer never comes back, so the pool kills the worker once the call is
    past its timeout; a worker thawed later could otherwise call after the lease."""
    frozen = _calls_in_flight(workers_cluster, receiver, "frozen", signal.SIGSTOP)
    time.sleep(TIMEOUT_S)
    _check_replaced(workers_cluster, frozen)
    _check_no_fire_lost_or_doubled(workers_cluster, receiver, "frozen")


def test_a_receiver_that_hangs_times_out_and_its_worker_lives_on(workers_cluster: Cluster,
                                                                  receiver: Receiver) -> None:
    """A call that times out ends at its timeout (aiohttp rounds a timeout of 5 s or more up to
    the next whole second unless told not to), well before the worker's watchdog."""
    before = {n.node_id: workers_of(workers_cluster, n)["exits"]["workers"] for n in workers_cluster.nodes}
    jobs = [{"id": f"hung-{i}", "schedule": f"@at {ms_to_rfc3339(int(time.time() * 1000) + 2000 + 300 * i)}",
             "webhook": {"url": f"{receiver.url}?hang=15", "timeout_s": 5 + 0.3 * i}, "retry": {"max_attempts": 1}}
            for i in range(4)]
    assert http("POST", workers_cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    for job in jobs:
        (row,) = wait_for(lambda job=job: executions(workers_cluster, job["id"]), 20, "the timed-out call's record")
        # Its start and end are whole milliseconds of the wall clock: a millisecond either way.
        assert row["status"] == "timed_out" and job["webhook"]["timeout_s"] * 1000 - 2 <= row["duration_ms"], row
        assert row["duration_ms"] < job["webhook"]["timeout_s"] * 1000 + 1000, row
    assert {n.node_id: workers_of(workers_cluster, n)["exits"]["workers"] for n in workers_cluster.nodes} == before


def test_a_worker_frozen_before_its_calls_loses_none_and_calls_none_twice(
        workers_cluster: Cluster, receiver: Receiver) -> None:
    """SIGSTOP the workers first: calls handed to one are not acked, so later ones go elsewhere
    (the node's own loop, with one worker each); those it had were never made, and end recorded."""
    frozen = worker_pids(workers_cluster)
    for pids in frozen.values():
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
    jobs = one_shots("iced", receiver.url, int(time.time() * 1000) + 1500, hang_s=0)
    assert http("POST", workers_cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    _check_replaced(workers_cluster, frozen, timeout_s=20)
    check_each_recorded_none_twice(workers_cluster, receiver, jobs)
