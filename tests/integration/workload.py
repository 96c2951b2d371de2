"""A steady workload for the failover and operations tests: JOBS jobs `@every 1s`, and the
checks that every second of every job was delivered, once."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from devkit.devcluster import http
from devkit.harness import Cluster, NodeProc, Receiver

JOBS = 20


def scheduled_ms(delivery: dict) -> int:
    return int(delivery["fire_id"].rsplit(":", 1)[1])


def load_jobs(receiver: Receiver, prefix: str, url: str, query: str = "", count: int = JOBS) -> None:
    """query: the receiver's per-job behaviour, e.g. "?hang=0.3" for slow webhooks."""
    for i in range(count):
        body = {"id": f"{prefix}-{i:02d}", "schedule": "@every 1s", "webhook": {"url": receiver.url + query}}
        assert http("POST", url + "/api/v1/jobs", body)[0] == 201


def pause_jobs(url: str, prefix: str, count: int = JOBS) -> None:
    for i in range(count):
        assert http("POST", f"{url}/api/v1/jobs/{prefix}-{i:02d}/pause")[0] == 200


def committed(url: str, job_ids: list[str]) -> list[dict[str, Any]]:
    """The execution records one node has applied for these jobs (its history ring: up to 100 each)."""
    rows: list[dict[str, Any]] = []
    for job_id in job_ids:
        code, _, body = http("GET", f"{url}/api/v1/jobs/{job_id}/executions?limit=1000")
        assert code == 200, f"{url}: executions of {job_id}: {code} {body}"
        rows += body["executions"]
    return rows


def busiest_follower(cluster: Cluster, receiver: Receiver, prefix: str) -> NodeProc:
    shares = Counter(d["node"] for d in receiver.deliveries() if d["job_id"].startswith(prefix))
    return next(n for n in cluster.nodes if n.node_id == shares.most_common(1)[0][0])


def assert_every_second(seconds_by_job: dict[str, set[int]], what: str = "delivered") -> None:
    for job_id, seconds in seconds_by_job.items():
        gaps = set(range(min(seconds), max(seconds) + 1, 1000)) - seconds
        assert not gaps, f"{job_id}: nothing {what} for {sorted(gaps)}"


def delivered_seconds(deliveries: list[dict]) -> dict[str, set[int]]:
    by_job: dict[str, set[int]] = {}
    for d in deliveries:
        by_job.setdefault(d["job_id"], set()).add(scheduled_ms(d))
    return by_job


def assert_once_each(deliveries: list[dict]) -> None:
    doubled = [f for f, n in Counter(d["fire_id"] for d in deliveries).items() if n > 1]
    assert doubled == [], f"fires delivered twice: {doubled}"


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    """predicate()'s first truthy value, polled every 0.1 s; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
