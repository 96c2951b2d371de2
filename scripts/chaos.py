"""`make chaos`: kill, stop and restart nodes of a real cluster under load, then prove
from the receiver's ledger and the committed history that no fire was lost or doubled.

Starts its own three-node cluster and receiver on free ports (127.0.0.1 only)
with their own data directories, loads a workload (by default 150 jobs
`@every 1s` and 50 `*/2 * * * * *`), and runs each scenario for a bounded
time. After each scenario it waits for the cluster to settle and reconciles the
fires scheduled during the scenario:

- lost: expected, never delivered and without any committed outcome
  (a `missed` record from a misfire policy counts as an outcome: it is reported);
- duplicate deliveries: the same (fire id, attempt) delivered twice;
- doubled fires: the same fire id delivered more than once (any attempts);
- duplicate committed outcomes: the same (fire id, attempt) committed twice,
  or two successes committed for one fire, on any node;
- late: first delivery more than 1 s after the scheduled instant.

Exits 1 when anything was lost or a committed outcome was doubled. Writes
chaos-results/chaos.json and chaos-results/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedb.devcluster import http
from schedb.harness import Cluster, NodeProc, Receiver

EVERY_JOBS = 150
CRON_JOBS = 50
SETTLE_S = 8.0
LATE_MS = 1000
CHAOS_CONFIG = "\n[scheduler]\nhistory_per_job = 500\n"


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_new_leader(cluster: Cluster, old: NodeProc | None, timeout_s: float = 30.0) -> float:
    """Seconds until a node other than `old` says it leads."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        for node in cluster.nodes:
            if node is old:
                continue
            try:
                if http("GET", node.url + "/api/v1/cluster", timeout_s=0.5)[2]["role"] == "leader":
                    return time.monotonic() - started
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("no new leader within 30 s")


def restart(cluster: Cluster, nodes: list[NodeProc]) -> None:
    cluster.start(nodes)
    cluster.wait_ready(nodes)


# -- scenarios: each returns what it measured ("elections": seconds to a new leader) --

Measured = dict[str, Any]


def baseline(cluster: Cluster, _: argparse.Namespace) -> Measured:
    time.sleep(15)
    return {}


def leader_kills(cluster: Cluster, args: argparse.Namespace) -> Measured:
    times = []
    for _ in range(args.leader_kills):
        leader = cluster.leader()
        cluster.stop([leader], sig=signal.SIGKILL)
        times.append(wait_new_leader(cluster, leader))
        restart(cluster, [leader])
        time.sleep(2)
    return {"elections": times}


def follower_kill(cluster: Cluster, _: argparse.Namespace) -> Measured:
    victim = cluster.followers()[0]
    cluster.stop([victim], sig=signal.SIGKILL)
    time.sleep(12)
    restart(cluster, [victim])
    return {}


def no_quorum(cluster: Cluster, _: argparse.Namespace) -> Measured:
    """Two of three nodes die: the survivor must commit nothing until they are back."""
    victims, survivor = cluster.nodes[:2], cluster.nodes[2]
    cluster.stop(victims, sig=signal.SIGKILL)
    time.sleep(1.5)  # what was in flight when they died may still land
    before = cluster.status(survivor)["commit_index"]
    time.sleep(8.5)
    commits = cluster.status(survivor)["commit_index"] - before
    restart(cluster, victims)
    return {"commits_without_quorum": commits}


def sigstop_leader(cluster: Cluster, _: argparse.Namespace) -> Measured:
    leader = cluster.leader()
    os.kill(leader.pid, signal.SIGSTOP)
    try:
        elected = wait_new_leader(cluster, leader)
        time.sleep(4)
    finally:
        os.kill(leader.pid, signal.SIGCONT)
    time.sleep(3)
    return {"elections": [elected]}


def full_restart(cluster: Cluster, _: argparse.Namespace) -> Measured:
    cluster.stop()
    time.sleep(3)
    restart(cluster, cluster.nodes)
    return {}


def rolling_restart(cluster: Cluster, _: argparse.Namespace) -> Measured:
    for node in cluster.nodes:
        cluster.stop([node])
        restart(cluster, [node])
        time.sleep(2)
    return {}


SCENARIOS: list[tuple[str, Callable[[Cluster, argparse.Namespace], Measured]]] = [
    ("no faults", baseline),
    ("leader SIGKILL, repeated", leader_kills),
    ("follower SIGKILL", follower_kill),
    ("two nodes SIGKILL (no quorum)", no_quorum),
    ("leader SIGSTOP then SIGCONT", sigstop_leader),
    ("full-cluster stop and restart", full_restart),
    ("rolling restart (SIGTERM)", rolling_restart),
]


# -- the workload and the reconciliation ------------------------------------------

def load_workload(cluster: Cluster, receiver: Receiver) -> dict[str, tuple[int, int]]:
    """Creates the jobs; returns job id -> (period ms, created ms)."""
    jobs = {}
    for i in range(EVERY_JOBS + CRON_JOBS):
        every = i < EVERY_JOBS
        job_id = f"chaos-{'e' if every else 'c'}{i:03d}"
        body = {"id": job_id, "schedule": "@every 1s" if every else "*/2 * * * * *",
                "webhook": {"url": receiver.url, "timeout_s": 5}}
        code, _, job = http("POST", cluster.nodes[i % 3].url + "/api/v1/jobs", body)
        assert code == 201, job
        jobs[job_id] = (1000 if every else 2000, now_ms())
    return jobs


def expected_fires(jobs: dict[str, tuple[int, int]], start_ms: int, end_ms: int) -> set[str]:
    out = set()
    for job_id, (period_ms, created_ms) in jobs.items():
        first = (max(start_ms, created_ms) // period_ms + 1) * period_ms
        out.update(f"{job_id}:{ms}" for ms in range(first, end_ms, period_ms))
    return out


def committed(cluster: Cluster, jobs: dict[str, Any]) -> tuple[list[tuple[str, int, str]], list[str]]:
    """(fire id, attempt, status) of every committed execution on every node, and the nodes' ids."""
    rows: list[tuple[str, int, str]] = []
    for node in cluster.nodes:
        for job_id in jobs:
            history = http("GET", f"{node.url}/api/v1/jobs/{job_id}/executions?limit=1000")[2]["executions"]
            rows += [(f"{node.node_id}|{r['fire_id']}", r["attempt"], r["status"]) for r in history]
    return rows, [n.node_id for n in cluster.nodes]


def reconcile(name: str, cluster: Cluster, receiver: Receiver, jobs: dict[str, tuple[int, int]],
              window: tuple[int, int], measured: Measured) -> dict[str, Any]:
    elections = measured.get("elections", [])
    expected = expected_fires(jobs, *window)
    ledger = [d for d in receiver.deliveries() if d["fire_id"] in expected]
    rows, _ = committed(cluster, jobs)
    per_node = [(key.split("|", 1)[1], attempt, status) for key, attempt, status in rows]
    outcome_ids = {fire_id for fire_id, _, _ in per_node}
    delivered_ids = {d["fire_id"] for d in ledger}
    first_arrival: dict[str, int] = {}
    for d in ledger:
        first_arrival[d["fire_id"]] = min(first_arrival.get(d["fire_id"], d["arrival_ms"]), d["arrival_ms"])
    lateness = [arrival - int(fire_id.rsplit(":", 1)[1]) for fire_id, arrival in first_arrival.items()]
    successes = Counter((key, status) for key, _, status in rows if status == "succeeded")
    return {
        "scenario": name,
        "expected": len(expected),
        "delivered": len(delivered_ids),
        "lost": len(expected - delivered_ids - outcome_ids),
        "missed_by_policy": len({f for f, _, s in per_node if s == "missed" and f in expected}),
        "duplicate_deliveries": sum(n - 1 for n in Counter((d["fire_id"], d["attempt"]) for d in ledger).values()),
        "doubled_fires": sum(1 for n in Counter(d["fire_id"] for d in ledger).values() if n > 1),
        "duplicate_committed": sum(n - 1 for n in Counter((k, a) for k, a, _ in rows).values())
        + sum(n - 1 for n in successes.values()),
        "late": sum(1 for ms in lateness if ms > LATE_MS),
        "max_lateness_ms": max(lateness, default=0),
        "elections": len(elections),
        "new_leader_s_max": round(max(elections), 2) if elections else None,
        "commits_without_quorum": measured.get("commits_without_quorum"),
    }


COLUMNS = ["scenario", "expected", "delivered", "lost", "missed_by_policy", "duplicate_deliveries",
           "doubled_fires", "duplicate_committed", "late", "max_lateness_ms", "elections", "new_leader_s_max",
           "commits_without_quorum"]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in COLUMNS) + " |" for r in results]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    cluster = Cluster(work, extra_config=CHAOS_CONFIG)
    receiver = Receiver(work)
    results: list[dict[str, Any]] = []
    try:
        cluster.start()
        cluster.wait_ready()
        jobs = load_workload(cluster, receiver)
        time.sleep(3)
        for name, scenario in SCENARIOS:
            if args.only and args.only not in name:
                continue
            print(f"== {name}", flush=True)
            start = now_ms()
            measured = scenario(cluster, args)
            window = (start, now_ms())
            cluster.wait_ready()
            time.sleep(SETTLE_S)
            results.append(reconcile(name, cluster, receiver, jobs, window, measured))
            print(json.dumps(results[-1]), flush=True)
    finally:
        cluster.stop()
        receiver.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leader-kills", type=int, default=10)
    parser.add_argument("--only", default="", help="run only scenarios whose name contains this")
    parser.add_argument("--out", default="chaos-results")
    parser.add_argument("--keep", default="", help="run in this directory and keep its node logs and data")
    args = parser.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True)
        results = run(args, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="schedb-chaos-") as tmp:
            results = run(args, Path(tmp))
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(results, indent=2))
    (out / "chaos.md").write_text(markdown(results))
    print("\n" + markdown(results))
    failed = [r["scenario"] for r in results
              if r["lost"] or r["duplicate_committed"] or r["commits_without_quorum"]]
    if failed:
        print(f"FAILED: lost fires, doubled outcomes or commits without quorum in: {', '.join(failed)}")
        return 1
    print("no fire lost, no committed outcome doubled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
