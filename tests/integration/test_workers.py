"""Delivery worker processes (schedb.worker_pool) on three real nodes: every fire delivered once
through them; a worker SIGKILLed or frozen (SIGSTOP) mid-call loses no fire and calls no
at-most-once fire twice, and is replaced; workers go with their node."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devkit.devcluster import http, pid_alive
from devkit.harness import Cluster, Receiver, children_of
from schedb.timefmt import ms_to_rfc3339
from tests.integration.conftest import running_cluster
from tests.integration.workload import wait_for

HANG_S = 3
TIMEOUT_S = 6
JOBS = 6  # of each delivery guarantee


@pytest.fixture(scope="module")
def workers_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("workers")),
                         "\n[executor]\nworkers_min = 1\nworkers_max = 1\n") as cluster:
        yield cluster


def _workers(cluster: Cluster, node: Any) -> dict[str, Any]:
    return cluster.status(node)["executor"]["workers"]


def _pids(cluster: Cluster) -> dict[str, list[int]]:
    return {n.node_id: [w["pid"] for w in _workers(cluster, n)["running"]] for n in cluster.nodes}


def _one_shots(prefix: str, url: str, at_ms: int, hang_s: int = HANG_S) -> list[dict[str, Any]]:
    """JOBS at-most-once and JOBS at-least-once one-shots at `at_ms`, whose calls hang hang_s."""
    webhook = {"url": f"{url}?hang={hang_s}" if hang_s else url, "timeout_s": TIMEOUT_S}
    at = f"@at {ms_to_rfc3339(at_ms)}"
    return [{"id": f"{prefix}-{kind}-{i}", "schedule": at, "webhook": webhook, "delivery": delivery,
             "retry": {"max_attempts": 3, "backoff_s": 1, "backoff_max_s": 2}}
            for kind, delivery in (("amo", "at_most_once"), ("alo", "at_least_once")) for i in range(JOBS)]


def _calls_in_flight(cluster: Cluster, receiver: Receiver, prefix: str, sig: int) -> dict[str, list[int]]:
    """Create the one-shots, wait until every first call hangs at the receiver, then send `sig` to
    every node's worker; the workers it was sent to."""
    jobs = _one_shots(prefix, receiver.url, int(time.time() * 1000) + 3000)
    code, _, answer = http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})
    assert code in (200, 201) and not answer.get("errors"), answer
    wait_for(lambda: sum(d["job_id"].startswith(prefix) for d in receiver.deliveries()) >= 2 * JOBS, 15,
             "every first call to arrive")
    pids = _pids(cluster)
    for node_pids in pids.values():
        for pid in node_pids:
            os.kill(pid, sig)
    return pids


def _executions(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    code, _, body = http("GET", f"{cluster.nodes[0].url}/api/v1/jobs/{job_id}/executions")
    return body["executions"] if code == 200 else []


def _check_no_fire_lost_or_doubled(cluster: Cluster, receiver: Receiver, prefix: str) -> None:
    for i in range(JOBS):
        amo, alo = f"{prefix}-amo-{i}", f"{prefix}-alo-{i}"
        # At most once: recorded failed as lost with its worker (then dead-lettered).
        rows = wait_for(lambda job=amo: _executions(cluster, job), 20, f"{amo}'s record")
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed")], rows
        assert rows[0]["error"].startswith("worker_lost"), rows
        # At least once: tried again after the lost call, and delivered.
        rows = wait_for(lambda job=alo: [r for r in _executions(cluster, job) if r["status"] == "succeeded"], 30,
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
        now = _pids(cluster)
        return all(len(now[n]) == 1 and not set(now[n]) & set(old[n]) for n in now)

    wait_for(replaced, timeout_s, "every node's worker replaced")
    for node in cluster.nodes:
        status = _workers(cluster, node)
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
        (worker,) = _workers(cluster, node)["running"]
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
    before = {n.node_id: _workers(workers_cluster, n)["exits"]["workers"] for n in workers_cluster.nodes}
    jobs = [{"id": f"hung-{i}", "schedule": f"@at {ms_to_rfc3339(int(time.time() * 1000) + 2000 + 300 * i)}",
             "webhook": {"url": f"{receiver.url}?hang=15", "timeout_s": 5 + 0.3 * i}, "retry": {"max_attempts": 1}}
            for i in range(4)]
    assert http("POST", workers_cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    for job in jobs:
        (row,) = wait_for(lambda job=job: _executions(workers_cluster, job["id"]), 20, "the timed-out call's record")
        assert row["status"] == "timed_out" and job["webhook"]["timeout_s"] * 1000 <= row["duration_ms"], row
        assert row["duration_ms"] < job["webhook"]["timeout_s"] * 1000 + 1000, row
    assert {n.node_id: _workers(workers_cluster, n)["exits"]["workers"] for n in workers_cluster.nodes} == before


def test_a_worker_frozen_before_its_calls_loses_none_and_calls_none_twice(
        workers_cluster: Cluster, receiver: Receiver) -> None:
    """SIGSTOP the workers first: calls handed to one are not acked, so later ones go elsewhere
    (the node's own loop, with one worker each); those it had were never made, and end recorded."""
    frozen = _pids(workers_cluster)
    for pids in frozen.values():
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
    jobs = _one_shots("iced", receiver.url, int(time.time() * 1000) + 1500, hang_s=0)
    assert http("POST", workers_cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    _check_replaced(workers_cluster, frozen, timeout_s=20)
    _check_each_recorded_none_twice(workers_cluster, receiver, jobs)


def _check_each_recorded_none_twice(cluster: Cluster, receiver: Receiver, jobs: list[dict[str, Any]]) -> None:
    """Every at-least-once fire delivered; every at-most-once one delivered, or recorded not made
    (its worker never started it); none of them called twice."""
    for job in jobs:
        rows = wait_for(lambda job=job: _executions(cluster, job["id"]), 20, f"{job['id']}'s record")
        if job["delivery"] == "at_least_once":
            wait_for(lambda job=job: any(r["status"] == "succeeded" for r in _executions(cluster, job["id"])),
                     20, f"{job['id']} delivered")
        else:
            assert rows[0]["status"] == "succeeded" or rows[0]["error"].startswith("worker_late"), rows
    time.sleep(1)  # counted once every retry has settled
    ids = {job["id"] for job in jobs}
    arrivals = Counter(d["fire_id"] for d in receiver.deliveries() if d["job_id"] in ids)
    assert max(arrivals.values(), default=1) == 1, arrivals


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("two-workers")),
                         "\n[executor]\nworkers_min = 2\nworkers_max = 2\n") as cluster:
        yield cluster


def test_one_frozen_worker_of_two_costs_the_other_nothing(two_workers: Cluster, receiver: Receiver) -> None:
    """Review: a call the frozen worker never started was handed on past its start, to a worker
    that was then killed for it, and so on through the pool. Now the other worker lives on, and
    every fire is delivered or recorded, none twice."""
    pids = {node_id: sorted(node_pids) for node_id, node_pids in _pids(two_workers).items()}
    frozen = {node_id: node_pids[0] for node_id, node_pids in pids.items()}
    for pid in frozen.values():
        os.kill(pid, signal.SIGSTOP)
    jobs = _one_shots("half", receiver.url, int(time.time() * 1000) + 1500, hang_s=0)
    assert http("POST", two_workers.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
    _check_each_recorded_none_twice(two_workers, receiver, jobs)
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
    before = _workers(two_workers, node)["exits"]["workers"]
    os.kill(node.pid, signal.SIGSTOP)
    try:
        time.sleep(11)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    (row,) = wait_for(lambda: _executions(two_workers, "patient"), 20, "the call's record")
    assert row["status"] == "succeeded", row
    assert _workers(two_workers, node)["exits"]["workers"] == before


def test_a_node_stopped_with_calls_in_its_workers_stops_in_time_and_takes_them_along(tmp_path: Path,
                                                                                      receiver: Receiver) -> None:
    """SIGTERM with calls of 20 s in flight: the node drains within its budget, retires its
    workers and kills those that linger, by PID; none is left running. SIGKILL: the kernel ends
    the workers with their node (PR_SET_PDEATHSIG)."""
    with running_cluster(tmp_path, "\n[executor]\nworkers_min = 2\nworkers_max = 2\n") as cluster:
        jobs = [{"id": f"long-{i}", "schedule": "@every 1s", "webhook": {"url": f"{receiver.url}?hang=20",
                                                                         "timeout_s": 30}} for i in range(6)]
        assert http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})[0] in (200, 201)
        wait_for(lambda: sum(d["job_id"].startswith("long-") for d in receiver.deliveries()) >= 6, 15, "calls out")
        pids = _pids(cluster)
        busy = next(n for n in cluster.nodes if _workers(cluster, n)["running"][0]["in_flight"]
                    or _workers(cluster, n)["running"][1]["in_flight"])
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
        wait_for(lambda: any(_workers(cluster, n)["target"] == 3 for n in followers), 30, "three workers")
        for job in jobs:
            assert http("DELETE", f"{cluster.nodes[0].url}/api/v1/jobs/{job['id']}")[0] == 204
        wait_for(lambda: all(_workers(cluster, n)["target"] == 1 for n in cluster.nodes), 40, "back to one")
        wait_for(lambda: all(len(_workers(cluster, n)["running"]) == 1 for n in cluster.nodes), 15,
                 "the retired workers to finish and exit")
        went_to_three = False
        for node in cluster.nodes:
            changes = _scaled(node)
            steps = [(a, b) for _, a, b in changes]
            went_to_three |= steps[:2] == [(1, 2), (2, 3)]
            assert all(abs(a - b) == 1 and 1 <= b <= 3 for a, b in steps), steps
            assert not steps or steps[-1][1] == 1, steps
            assert all(b - a >= 3.0 - 0.05 for (a, _, _), (b, _, _) in itertools.pairwise(changes)), changes
            assert _workers(cluster, node)["exits"]["workers"] == 0  # retired, none ended unasked
        assert went_to_three
