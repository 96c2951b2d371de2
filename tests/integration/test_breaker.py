"""The circuit breaker per webhook target (schedb.breaker), on three real nodes: a receiver that
goes down gets far fewer calls than fires, a healthy one keeps its delay, and once it is back
the circuit closes within the cool-down; every fire is delivered or recorded with its reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.flaky import FlakyReceiver
from devkit.harness import Cluster, Receiver
from schedb.timefmt import rfc3339_to_ms
from tests.integration.conftest import running_cluster
from tests.integration.workload import wait_for

JOBS = 10
COOLDOWN_S = 3.0


@pytest.fixture
def flaky() -> Iterator[FlakyReceiver]:
    receiver = FlakyReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def breaker_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, f"[breaker]\ncooldown_s = {COOLDOWN_S}\n") as cluster:
        yield cluster


def _job(job_id: str, url: str) -> dict[str, Any]:
    return {"id": job_id, "schedule": "@every 1s", "webhook": {"url": url, "timeout_s": 2},
            "retry": {"max_attempts": 1}}


def _executions(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    code, _, body = http("GET", f"{cluster.nodes[0].url}/api/v1/jobs/{job_id}/executions?limit=200")
    assert code == 200, body
    return body["executions"]


def test_a_receiver_down_for_seconds_gets_far_fewer_calls_than_fires_and_the_circuit_closes_after(
        breaker_cluster: Cluster, flaky: FlakyReceiver, receiver: Receiver) -> None:
    cluster = breaker_cluster
    jobs = [_job(f"flaky-{i}", f"{flaky.url}/j{i}") for i in range(JOBS)] + \
        [_job(f"healthy-{i}", receiver.url + f"?n={i}") for i in range(3)]
    code, _, answer = http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})
    assert code in (200, 201) and not answer.get("errors"), answer
    wait_for(lambda: len(flaky.calls) >= 2 * JOBS, 20, "the flaky receiver's first fires")

    flaky.down = True
    down_at, down_ms = time.monotonic(), int(time.time() * 1000)
    time.sleep(8.0)
    up_at, up_ms = time.monotonic(), int(time.time() * 1000)
    flaky.down = False
    calls_while_down = flaky.calls_between(down_at + 0.5, up_at)  # answers to calls made just before excluded
    fires_while_down = JOBS * (up_at - down_at - 0.5)
    circuits = [c for node in cluster.nodes for c in http("GET", node.url + "/api/v1/cluster")[2]["circuits"]]
    assert calls_while_down < fires_while_down / 3, (calls_while_down, fires_while_down)
    assert {c["target"] for c in circuits} == {flaky.url} and any(c["state"] == "open" for c in circuits)

    # Back up: within the cool-down (and a probe's round) every fire is called again.
    time.sleep(COOLDOWN_S + 2.0)
    last_s = time.monotonic()
    time.sleep(2.0)
    assert flaky.calls_between(last_s, time.monotonic()) >= JOBS * 2 * 0.8
    assert [http("GET", node.url + "/api/v1/cluster")[2]["circuits"] for node in cluster.nodes] == [[], [], []]

    # Every fire of the outage, one by one, is recorded: failed with its reason (circuit_open or
    # HTTP 503), none missing; after it, each is delivered.
    outage = range((down_ms // 1000 + 1) * 1000, up_ms - 500, 1000)
    for i in range(JOBS):
        rows = {rfc3339_to_ms(r["scheduled_at"]): r for r in _executions(cluster, f"flaky-{i}")}
        assert all(ms in rows for ms in outage), (i, [ms for ms in outage if ms not in rows])
        assert all(rows[ms]["status"] == "failed" and (rows[ms]["error"] or "").startswith(
            ("circuit_open: ", "HTTP 503")) for ms in outage), [rows[ms] for ms in outage]
        assert rows[max(rows)]["status"] == "succeeded"
    refused = sum(1 for i in range(JOBS) for r in _executions(cluster, f"flaky-{i}")
                  if r["status"] == "failed" and (r["error"] or "").startswith("circuit_open"))
    assert refused >= fires_while_down / 2

    # The healthy receiver's fires kept their delay through it all.
    late = [d for d in receiver.deliveries() if d["job_id"].startswith("healthy-")
            and d["arrival_ms"] - rfc3339_to_ms(d["scheduled_at"]) > 1_000]
    assert late == []


def test_a_jobs_own_breaker_settings_apply_to_its_calls_only(breaker_cluster: Cluster, flaky: FlakyReceiver) -> None:
    """Three jobs call the same receiver, down all along: the node's settings open its circuit
    after 5 failures; a job's own `failures: 2` opens a circuit of its own sooner; a job with the
    breaker off is called for every fire."""
    flaky.down = True
    jobs = [_job("by-the-node", f"{flaky.url}/a"), {**_job("touchy", f"{flaky.url}/b"), "breaker": {"failures": 2}},
            {**_job("always-called", f"{flaky.url}/c"), "breaker": {"enabled": False}}]
    code, _, answer = http("POST", breaker_cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})
    assert code in (200, 201) and not answer.get("errors"), answer
    job = wait_for(lambda: (answer := http("GET", breaker_cluster.nodes[1].url + "/api/v1/jobs/touchy"))[0] == 200
                   and answer[2], 10, "node 2 to apply the create")
    assert job["breaker"] == {"failures": 2}

    def called(job_id: str) -> list[bool]:  # oldest first: was each fire called (or refused)?
        rows = sorted(_executions(breaker_cluster, job_id), key=lambda r: r["scheduled_at"])
        return [not (r["error"] or "").startswith("circuit_open") for r in rows]

    wait_for(lambda: len(called("always-called")) >= 8, 20, "eight records of each job")
    assert all(called("always-called")), "the breaker is off for it: every fire called"
    assert called("touchy")[:3] == [True, True, False]  # opened after 2, not 5
    assert called("by-the-node")[:6] == [True] * 5 + [False]
    circuits = [c for node in breaker_cluster.nodes for c in http("GET", node.url + "/api/v1/cluster")[2]["circuits"]]
    assert {json.dumps(c["override"]) for c in circuits if c["state"] == "open"} <= {"null", '{"failures": 2}'}
