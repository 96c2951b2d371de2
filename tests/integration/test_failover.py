"""SIGKILL of the leader: fires keep going out on time from the followers' lookahead,
and nothing is lost or committed twice."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from tests.integration.harness import Cluster, Receiver, http

JOBS = 20


def test_leader_sigkill_loses_and_doubles_nothing(tmp_path: Path, receiver: Receiver) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        cluster.wait_ready()
        old_leader = cluster.leader()
        survivor = next(n for n in cluster.nodes if n is not old_leader)
        for i in range(JOBS):
            body = {"id": f"fo-{i:02d}", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
            assert http("POST", survivor.url + "/api/v1/jobs", body)[0] == 201
        time.sleep(3.0)
        killed_ms = int(time.time() * 1000)
        cluster.stop([old_leader], sig=signal.SIGKILL)
        time.sleep(6.0)  # longer than the lookahead: the new leader must have taken over dispatch
        new_leader = cluster.leader()
        assert new_leader is not old_leader
        cluster.start([old_leader])
        cluster.wait_ready()
        time.sleep(3.0)
        for i in range(JOBS):
            assert http("PATCH", f"{survivor.url}/api/v1/jobs/fo-{i:02d}", {"paused": True})[0] == 200
        time.sleep(2.0)

        deliveries = [d for d in receiver.deliveries() if d["job_id"].startswith("fo-")]
        assert max(Counter((d["fire_id"], d["attempt"]) for d in deliveries).values()) == 1
        by_job: dict[str, set[int]] = {}
        for d in deliveries:
            by_job.setdefault(d["job_id"], set()).add(int(d["fire_id"].rsplit(":", 1)[1]))
        for job_id, seconds in by_job.items():
            gaps = set(range(min(seconds), max(seconds) + 1, 1000)) - seconds
            assert not gaps, f"{job_id}: no delivery for {sorted(gaps)} (leader killed at {killed_ms})"
            assert max(seconds) > killed_ms + 8000, f"{job_id} stopped firing after the kill"
        around_kill = [d["arrival_ms"] - int(d["fire_id"].rsplit(":", 1)[1]) for d in deliveries
                       if killed_ms - 1000 <= int(d["fire_id"].rsplit(":", 1)[1]) <= killed_ms + 5000]
        assert around_kill and max(around_kill) < 1000, f"fires were late around the kill: {max(around_kill)} ms"

        delivered = {(d["fire_id"], d["attempt"]) for d in deliveries}
        for node in cluster.nodes:
            committed: list[tuple[str, int]] = []
            for job_id in by_job:
                rows = http("GET", f"{node.url}/api/v1/jobs/{job_id}/executions?limit=1000")[2]["executions"]
                committed += [(r["fire_id"], r["attempt"]) for r in rows]
            assert len(committed) == len(set(committed)), f"{node.node_id}: an outcome was committed twice"
            assert set(committed) == delivered, f"{node.node_id}: {len(delivered - set(committed))} uncommitted"
    finally:
        cluster.stop()
