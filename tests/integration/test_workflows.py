"""Workflows against real nodes: a diamond of jobs triggered once, a failing branch, a leader
SIGKILL in the middle of a run, and cycles refused."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from tests.integration.workload import wait_for

pytestmark = pytest.mark.integration


def make_dag(url: str, prefix: str, receiver: Receiver, queries: dict[str, str] | None = None) -> None:
    """a → b, a → c, b and c → d (a runs only when triggered)."""
    queries = queries or {}
    for name, upstreams in (("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])):
        body: dict[str, Any] = {"id": f"{prefix}{name}", "retry": {"max_attempts": 1},
                                "webhook": {"url": receiver.url + queries.get(name, "")}}
        if upstreams:
            body["depends_on"] = [f"{prefix}{u}" for u in upstreams]
        else:
            body["schedule"] = "@yearly"
        assert http("POST", url + "/api/v1/jobs", body)[0] == 201, body


def deliveries_of(receiver: Receiver, prefix: str) -> list[dict[str, Any]]:
    return [d for d in receiver.deliveries() if d["job_id"].startswith(prefix)]


def test_a_diamond_fires_d_once_after_b_and_c_with_one_run_id(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[0].url
    make_dag(url, "dia-", receiver)
    code, _, triggered = http("POST", url + "/api/v1/jobs/dia-a/trigger", {"params": {"day": "2026-11-26"}})
    assert code == 202
    run_id = triggered["fire_id"]
    got = wait_for(lambda: (rows := deliveries_of(receiver, "dia-")) and len(rows) >= 4 and rows, 20, "four steps")
    assert Counter(d["job_id"] for d in got) == Counter(["dia-a", "dia-b", "dia-c", "dia-d"])
    assert {d["run_id"] for d in got} == {run_id}
    arrival = {d["job_id"]: d["arrival_ms"] for d in got}
    assert arrival["dia-d"] >= max(arrival["dia-b"], arrival["dia-c"]) >= arrival["dia-a"]
    assert '"params":{"day":"2026-11-26"}' in next(d for d in got if d["job_id"] == "dia-a")["body"]
    run = wait_for(lambda: (r := http("GET", f"{cluster.nodes[2].url}/api/v1/runs/{run_id}")[2]) and
                   r.get("finished_at") and r, 10, "the run to finish")
    assert {k: v["status"] for k, v in run["steps"].items()} == dict.fromkeys(
        ["dia-a", "dia-b", "dia-c", "dia-d"], "succeeded")
    (d_run,) = http("GET", url + "/api/v1/jobs/dia-d/executions")[2]["executions"]
    assert d_run["triggered_by"] == f"dependency:{run_id}" and d_run["trigger"] == "dependency"
    a_run = http("GET", url + "/api/v1/jobs/dia-a/executions")[2]["executions"][0]
    assert a_run["triggered_by"] == "manual:api"


def test_a_failing_branch_makes_d_upstream_failed(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[0].url
    make_dag(url, "bad-", receiver, {"c": "?fail=always"})
    run_id = http("POST", url + "/api/v1/jobs/bad-a/trigger")[2]["fire_id"]
    run = wait_for(lambda: (r := http("GET", f"{url}/api/v1/runs/{run_id}")[2]) and r.get("finished_at") and r,
                   20, "the run to finish")
    assert run["steps"]["bad-c"]["status"] == "failed" and run["steps"]["bad-d"]["status"] == "upstream_failed"
    (record,) = http("GET", url + "/api/v1/jobs/bad-d/executions")[2]["executions"]
    assert record["status"] == "upstream_failed"
    assert [d["job_id"] for d in deliveries_of(receiver, "bad-d")] == []


def test_cycles_are_refused_naming_the_jobs_and_dependents_protect_their_upstream(cluster: Cluster,
                                                                                 receiver: Receiver) -> None:
    url = cluster.nodes[1].url
    base = {"schedule": "@yearly", "webhook": {"url": receiver.url}}
    assert http("POST", url + "/api/v1/jobs", {"id": "cyc-a", **base})[0] == 201
    assert http("POST", url + "/api/v1/jobs", {"id": "cyc-b", "depends_on": ["cyc-a"], **base})[0] == 201
    code, _, problem = http("PATCH", url + "/api/v1/jobs/cyc-a", {"depends_on": ["cyc-b"]})
    assert code == 422 and "cyc-a → cyc-b → cyc-a" in problem["errors"][0]["message"]
    assert http("DELETE", url + "/api/v1/jobs/cyc-a")[0] == 409
    assert http("DELETE", url + "/api/v1/jobs/cyc-a?force=true")[0] == 204
    assert http("GET", url + "/api/v1/jobs/cyc-b")[2]["depends_on"] == []


def test_a_leader_sigkill_mid_run_loses_and_doubles_no_step(own_cluster: Cluster, receiver: Receiver) -> None:
    cluster = own_cluster
    url = cluster.nodes[0].url
    slow = {name: "?hang=0.8" for name in "abcd"}  # the run takes a few seconds
    make_dag(url, "kill-", receiver, slow)
    run_id = http("POST", url + "/api/v1/jobs/kill-a/trigger")[2]["fire_id"]
    wait_for(lambda: deliveries_of(receiver, "kill-b"), 15, "step b to start")
    leader = cluster.leader()
    cluster.stop([leader], sig=signal.SIGKILL)
    survivor = next(n for n in cluster.nodes if n is not leader)
    run = wait_for(lambda: (r := http("GET", f"{survivor.url}/api/v1/runs/{run_id}")[2]) and r.get("finished_at")
                   and r, 30, "the run to finish after the failover")
    assert {k: v["status"] for k, v in run["steps"].items()} == dict.fromkeys(
        ["kill-a", "kill-b", "kill-c", "kill-d"], "succeeded")
    got = deliveries_of(receiver, "kill-")
    assert Counter(d["job_id"] for d in got) == Counter(["kill-a", "kill-b", "kill-c", "kill-d"])
    assert {d["run_id"] for d in got} == {run_id}
