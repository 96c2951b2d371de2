"""A full-cluster stop and restart keeps every job and its history (acceptance 4 of issue 3)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver


def _history(cluster: Cluster, job_ids: list[str]) -> dict[str, set[str]]:
    url = cluster.nodes[0].url
    return {j: {r["fire_id"] for r in http("GET", f"{url}/api/v1/jobs/{j}/executions?limit=1000")[2]["executions"]}
            for j in job_ids}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_full_restart_keeps_jobs_and_history(tmp_path: Path, receiver: Receiver, sig: int) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        cluster.wait_ready()
        job_ids = [f"keep-{i}" for i in range(5)]
        for job_id in job_ids:
            body = {"id": job_id, "schedule": "@every 1s", "webhook": {"url": receiver.url}, "tags": {"k": "v"}}
            assert http("POST", cluster.nodes[1].url + "/api/v1/jobs", body)[0] == 201
        assert http("PATCH", cluster.nodes[1].url + "/api/v1/jobs/keep-0", {"tags": {"k": "w"}})[0] == 200
        time.sleep(4.0)
        before_jobs = http("GET", cluster.nodes[0].url + "/api/v1/jobs")[2]["jobs"]
        before_history = _history(cluster, job_ids)
        assert all(len(h) >= 2 for h in before_history.values()), before_history
        old_pids = {n.pid for n in cluster.nodes}

        cluster.stop(sig=sig)
        cluster.start()
        cluster.wait_ready()
        assert not old_pids & {n.pid for n in cluster.nodes}, "the nodes were really restarted"

        for node in cluster.nodes:
            after_jobs = http("GET", node.url + "/api/v1/jobs")[2]["jobs"]
            assert [(j["id"], j["version"], j["tags"], j["created_at"]) for j in after_jobs] == [
                (j["id"], j["version"], j["tags"], j["created_at"]) for j in before_jobs]
        after_history = _history(cluster, job_ids)
        for job_id in job_ids:
            assert before_history[job_id] <= after_history[job_id], f"{job_id} lost history"
        time.sleep(3.0)  # and the jobs keep firing after the restart
        grown = _history(cluster, job_ids)
        assert all(len(grown[j]) > len(after_history[j]) for j in job_ids)
    finally:
        cluster.stop()


def test_misfire_policies_after_the_cluster_was_stopped_for_ten_seconds(
        tmp_path: Path, receiver: Receiver) -> None:
    cluster = Cluster(tmp_path, extra_config="\n[scheduler]\nmisfire_grace_s = 2.0\n")
    policies = {"mf-once": "run_once", "mf-skip": "skip", "mf-all": "run_all"}
    try:
        cluster.start()
        cluster.wait_ready()
        for job_id, policy in policies.items():
            body = {"id": job_id, "schedule": "@every 1s", "misfire": policy, "webhook": {"url": receiver.url}}
            assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
        time.sleep(3.0)
        cluster.stop()
        stopped_ms = int(time.time() * 1000)
        time.sleep(10.0)
        cluster.start()
        cluster.wait_ready()
        ready_ms = int(time.time() * 1000)
        time.sleep(4.0)
        for job_id in policies:
            assert http("POST", f"{cluster.nodes[0].url}/api/v1/jobs/{job_id}/pause")[0] == 200
        time.sleep(1.0)

        gap = range(stopped_ms + 2000, ready_ms - 2000)  # occurrences every policy must have judged
        for job_id, policy in policies.items():
            rows = http("GET", f"{cluster.nodes[1].url}/api/v1/jobs/{job_id}/executions?limit=1000")[2]["executions"]
            missed = {int(r["fire_id"].rsplit(":", 1)[1]) for r in rows if r["status"] == "missed"}
            delivered = {int(d["fire_id"].rsplit(":", 1)[1]) for d in receiver.deliveries() if d["job_id"] == job_id}
            in_gap = sorted(ms for ms in delivered if ms in gap)
            assert not missed & delivered, f"{job_id}: a missed fire was delivered"
            if policy == "run_all":
                assert not missed and set(range(min(delivered), max(delivered) + 1, 1000)) <= delivered
            elif policy == "skip":
                assert len(missed) >= 5 and in_gap == [], f"{job_id} delivered {in_gap}"
            else:
                assert len(missed) >= 5 and len(in_gap) <= 1, f"{job_id} delivered {in_gap}, missed {len(missed)}"
            print(f"\n{job_id} ({policy}): {len(missed)} missed, {len(in_gap)} delivered in the gap")
    finally:
        cluster.stop()
