"""Delivery worker processes (schedb.worker_pool) with two per node: one frozen costs the other
nothing; the node itself frozen does not count against its workers; a node stopped with calls
in its workers stops in time and takes them along; a load step scales the workers up and calm
back down."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devkit.devcluster import http, pid_alive
from devkit.harness import Cluster, Receiver
from schedb.timefmt import ms_to_rfc3339
from tests.integration.conftest import running_cluster
from tests.integration.workers_kit import (
    check_each_recorded_none_twice,
    cluster_with_workers,
    executions,
    one_shots,
    worker_pids,
    workers_of,
)
from tests.integration.workload import wait_for


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_with_workers(Path(tmp_path_factory.mktemp("two-workers")), 2) as cluster:
        yield cluster


def test_one_frozen_worker_of_two_costs_the_other_nothing(two_workers: Cluster, receiver: Receiver) -> None:
    """Review: a call the frozen worker never started was handed on past its start, to a worker
    that was then killed for it, and so on through the pool. Now the other worker lives on, and
    every fire is delivered or recorded, none twice."""
    pids = {node_id: sorted(node_pids) for node_id, node_pids in worker_pids(two_workers).items()}
    frozen = {node_id: node_pids[0] for node_id, node_pids in pids.items()}
    for pid in frozen.values():
        os.kill(pid, signal.SIGSTOP)
    jobs = one_shots("half", receiver.url, int(time.time() * 1000) + 1500, hang_s=0)
    assert http("POST", two_workers.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    check_each_recorded_none_twice(two_workers, receiver, jobs)
    wait_for(lambda: not any(pid_alive(pid) for pid in frozen.values()), 20, "the frozen workers killed")
    for node_id, node_pids in pids.items():
        assert pid_alive(node_pids[1]), f"{node_id}'s healthy worker was killed"


def test_a_node_stopped_for_seconds_does_not_hold_it_against_its_workers(two_workers: Cluster,
                                                                         receiver: Receiver) -> None:
    """SIGSTOP the node (not its workers) for 11 s while a worker's 14 s call is out: thawed, it
    reads what its workers sent meanwhile before judging them; none is killed, the call succeeds."""
    at = ms_to_rfc3339(int(time.time() * 1000) + 1500)
    job = {"id": "patient", "schedule": f"@at {at}", "webhook": {"url": f"{receiver.url}?hang=14", "timeout_s": 20}}
    assert http("POST", two_workers.nodes[0].url + "/api/v1/jobs", job)[0] == 201
    (call,) = wait_for(lambda: [d for d in receiver.deliveries() if d["job_id"] == "patient"], 15, "the call")
    node = next(n for n in two_workers.nodes if n.node_id == call["node"])
    before = workers_of(two_workers, node)["exits"]["workers"]
    os.kill(node.pid, signal.SIGSTOP)
    try:
        time.sleep(11)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    (row,) = wait_for(lambda: executions(two_workers, "patient"), 20, "the call's record")
    assert row["status"] == "succeeded", row
    assert workers_of(two_workers, node)["exits"]["workers"] == before


def test_a_node_stopped_with_calls_in_its_workers_stops_in_time_and_takes_them_along(tmp_path: Path,
                                                                                      receiver: Receiver) -> None:
    """SIGTERM with calls of 20 s in flight: the node drains within its budget, retires its
    workers and kills those that linger, by PID; none is left running. SIGKILL: the kernel ends
    the workers with their node (PR_SET_PDEATHSIG)."""
    with cluster_with_workers(tmp_path, 2) as cluster:
        jobs = [{"id": f"long-{i}", "schedule": "@every 1s", "webhook": {"url": f"{receiver.url}?hang=20",
                                                                         "timeout_s": 30}} for i in range(6)]
        assert http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
        wait_for(lambda: sum(d["job_id"].startswith("long-") for d in receiver.deliveries()) >= 6, 15, "calls out")
        pids = worker_pids(cluster)
        busy = next(n for n in cluster.nodes if workers_of(cluster, n)["running"][0]["in_flight"]
                    or workers_of(cluster, n)["running"][1]["in_flight"])
        assert busy.proc is not None
        started = time.monotonic()
        busy.proc.send_signal(signal.SIGTERM)
        busy.proc.wait(timeout=15)
        assert time.monotonic() - started < 13  # drain (8 s at most), then the workers: 2 s
        assert not any(pid_alive(pid) for pid in pids[busy.node_id])
        other = next(n for n in cluster.nodes if n is not busy)
        cluster.stop([other], sig=signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids[other.node_id]), 5, "workers ending with their node")


SCALING = ("\n[executor]\nworkers_min = 1\nworkers_max = 3\nscale_up_inflight = 4\nscale_up_after_s = 2.0\n"
           "scale_down_after_s = 4.0\nscale_interval_s = 3.0\n")


def _scaled(node: Any) -> list[tuple[float, int, int]]:
    """(when, from, to) of each change in the node's number of workers, from its log."""
    changes = []
    for line in node.log.read_text(errors="replace").splitlines():
        if '"workers_scaled"' in line:
            event = json.loads(line)
            at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            changes.append((at, event["workers_from"], event["workers_to"]))
    return changes


def test_a_load_step_adds_workers_one_interval_apart_and_calm_retires_them(tmp_path: Path,
                                                                            receiver: Receiver) -> None:
    """20 calls of 2 s a second put ~20 calls in flight on each follower, 4 per worker is pressure:
    one worker, then two, then three, each change at least scale_interval_s after the last. With
    the jobs gone, calm retires them one by one, down to workers_min."""
    with running_cluster(tmp_path, SCALING) as cluster:
        jobs = [{"id": f"step-{i}", "schedule": "@every 1s", "webhook": {"url": f"{receiver.url}?hang=2"}}
                for i in range(20)]
        assert http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
        followers = cluster.followers()
        wait_for(lambda: any(workers_of(cluster, n)["target"] == 3 for n in followers), 30, "three workers")
        for job in jobs:
            assert http("DELETE", f"{cluster.nodes[0].url}/api/v1/jobs/{job['id']}")[0] == 204
        wait_for(lambda: all(workers_of(cluster, n)["target"] == 1 for n in cluster.nodes), 40, "back to one")
        wait_for(lambda: all(len(workers_of(cluster, n)["running"]) == 1 for n in cluster.nodes), 15,
                 "the retired workers to finish and exit")
        went_to_three = False
        for node in cluster.nodes:
            changes = _scaled(node)
            steps = [(a, b) for _, a, b in changes]
            went_to_three |= steps[:2] == [(1, 2), (2, 3)]
            assert all(abs(a - b) == 1 and 1 <= b <= 3 for a, b in steps), steps
            assert not steps or steps[-1][1] == 1, steps
            assert all(b - a >= 3.0 - 0.05 for (a, _, _), (b, _, _) in itertools.pairwise(changes)), changes
            assert workers_of(cluster, node)["exits"]["workers"] == 0  # retired, none ended unasked
        assert went_to_three
