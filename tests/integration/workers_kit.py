"""What the delivery-worker tests share (tests/integration/test_workers*.py): the workers a node
reports, one-shot jobs of both delivery guarantees, and the check that every fire was delivered
or recorded and none called twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.timefmt import ms_to_rfc3339
from tests.integration.conftest import running_cluster
from tests.integration.workload import wait_for

HANG_S = 3
TIMEOUT_S = 6
JOBS = 6  # of each delivery guarantee


@contextmanager
def cluster_with_workers(path: Path, count: int) -> Iterator[Cluster]:
    """Three nodes, each delivering through `count` workers (workers_min = workers_max)."""
    with running_cluster(path, f"\n[executor]\nworkers_min = {count}\nworkers_max = {count}\n") as cluster:
        yield cluster


def workers_of(cluster: Cluster, node: Any) -> dict[str, Any]:
    return cluster.status(node)["executor"]["workers"]


def worker_pids(cluster: Cluster) -> dict[str, list[int]]:
    return {n.node_id: [w["pid"] for w in workers_of(cluster, n)["running"]] for n in cluster.nodes}


def one_shots(prefix: str, url: str, at_ms: int, hang_s: int = HANG_S) -> list[dict[str, Any]]:
    """JOBS at-most-once and JOBS at-least-once one-shots at `at_ms`, whose calls hang hang_s."""
    webhook = {"url": f"{url}?hang={hang_s}" if hang_s else url, "timeout_s": TIMEOUT_S}
    at = f"@at {ms_to_rfc3339(at_ms)}"
    return [{"id": f"{prefix}-{kind}-{i}", "schedule": at, "webhook": webhook, "delivery": delivery,
             "retry": {"max_attempts": 3, "backoff_s": 1, "backoff_max_s": 2}}
            for kind, delivery in (("amo", "at_most_once"), ("alo", "at_least_once")) for i in range(JOBS)]


def executions(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    code, _, body = http("GET", f"{cluster.nodes[0].url}/api/v1/jobs/{job_id}/executions")
    return body["executions"] if code == 200 else []


def check_each_recorded_none_twice(cluster: Cluster, receiver: Receiver, jobs: list[dict[str, Any]]) -> None:
    """Every at-least-once fire delivered; every at-most-once one delivered, or recorded not made
    (its worker never started it); none of them called twice."""
    for job in jobs:
        rows = wait_for(lambda job=job: executions(cluster, job["id"]), 20, f"{job['id']}'s record")
        if job["delivery"] == "at_least_once":
            wait_for(lambda job=job: any(r["status"] == "succeeded" for r in executions(cluster, job["id"])),
                     20, f"{job['id']} delivered")
        else:
            assert rows[0]["status"] == "succeeded" or rows[0]["error"].startswith("worker_late"), rows
    time.sleep(1)  # counted once every retry has settled
    ids = {job["id"] for job in jobs}
    arrivals = Counter(d["fire_id"] for d in receiver.deliveries() if d["job_id"] in ids)
    assert max(arrivals.values(), default=1) == 1, arrivals
