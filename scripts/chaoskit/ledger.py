"""The workload, and the reconciliation of the receiver's ledger with the committed history.

For the fires scheduled during a scenario's window:
- lost: expected, never delivered and without any committed outcome
  (a `missed` record from a misfire policy counts as an outcome: it is reported, and it
  fails the run where a connected majority stayed up throughout: there, nothing excuses it);
- duplicate deliveries: the same (fire id, attempt) delivered twice;
- doubled fires: the same fire id delivered more than once (any attempts);
- duplicate committed outcomes: the same (fire id, attempt) committed twice,
  or two successes committed for one fire, on any node;
- late: first delivery more than 1 s after the scheduled instant;
- early: first delivery more than 100 ms before it (a node whose clock runs ahead).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaoskit.common import Ctx, Measured, now_ms
from devkit.devcluster import http

EVERY_JOBS = 150
CRON_JOBS = 50
LATE_MS = 1000
EARLY_MS = 100
HISTORY_LIMIT_MAX = 1000  # the API's page bound


def load_workload(ctx: Ctx) -> None:
    """150 jobs `@every 1s` and 50 `*/2 * * * * *`, created round-robin through the nodes."""
    for i in range(EVERY_JOBS + CRON_JOBS):
        every = i < EVERY_JOBS
        job_id = f"chaos-{'e' if every else 'c'}{i:03d}"
        create_job(ctx, ctx.cluster.nodes[i % 3].url, job_id, "@every 1s" if every else "*/2 * * * * *",
                   1000 if every else 2000)


def create_job(ctx: Ctx, node_url: str, job_id: str, schedule: str, period_ms: int) -> int:
    """Creates one job through node_url; registers it with the reconciliation when created (201).
    Returns the answer's status: a scenario may expect a refusal."""
    body = {"id": job_id, "schedule": schedule, "webhook": {"url": ctx.receiver.url, "timeout_s": 5}}
    for _ in range(50):
        code, _, answer = http("POST", node_url + "/api/v1/jobs", body)
        if code != 429:  # the API's bound on pending commands: come back
            break
        time.sleep(0.2)
    if code == 201:
        ctx.jobs[job_id] = (period_ms, now_ms())
    elif code < 500:
        raise AssertionError(f"creating {job_id}: {code} {answer}")
    return code


def expected_fires(jobs: dict[str, tuple[int, int]], start_ms: int, end_ms: int) -> set[str]:
    out = set()
    for job_id, (period_ms, created_ms) in jobs.items():
        first = (max(start_ms, created_ms) // period_ms + 1) * period_ms
        out.update(f"{job_id}:{ms}" for ms in range(first, end_ms, period_ms))
    return out


def committed(ctx: Ctx, since_ms: int) -> list[tuple[str, str, int, str]]:
    """(node id, fire id, attempt, status) of every execution committed on every node, back to
    about since_ms (history is newest first: a page covers the window, not the whole ring)."""
    limit = min(HISTORY_LIMIT_MAX, 3 * (now_ms() - since_ms) // 1000 + 100)

    def one(node_job: tuple[Any, str]) -> list[tuple[str, str, int, str]]:
        node, job_id = node_job
        page = http("GET", f"{node.url}/api/v1/jobs/{job_id}/executions?limit={limit}")[2]["executions"]
        return [(node.node_id, r["fire_id"], r["attempt"], r["status"]) for r in page]

    pairs = [(node, job_id) for node in ctx.cluster.nodes for job_id in ctx.jobs]
    with ThreadPoolExecutor(8) as pool:
        return [row for rows in pool.map(one, pairs) for row in rows]


def reconcile(name: str, ctx: Ctx, window: tuple[int, int], measured: Measured) -> dict[str, Any]:
    elections = measured.get("elections", [])
    expected = expected_fires(ctx.jobs, *window) - set(measured.get("excluded", ()))
    ledger = [d for d in ctx.receiver.deliveries() if d["fire_id"] in expected]
    rows = [r for r in committed(ctx, window[0]) if r[1] in expected]
    outcome_ids = {fire_id for _, fire_id, _, _ in rows}
    delivered_ids = {d["fire_id"] for d in ledger}
    first_arrival: dict[str, int] = {}
    for d in ledger:
        first_arrival[d["fire_id"]] = min(first_arrival.get(d["fire_id"], d["arrival_ms"]), d["arrival_ms"])
    lateness = [arrival - int(fire_id.rsplit(":", 1)[1]) for fire_id, arrival in first_arrival.items()]
    successes = Counter((node, fire_id) for node, fire_id, _, status in rows if status == "succeeded")
    return {
        "scenario": name,
        "expected": len(expected),
        "delivered": len(delivered_ids),
        "lost": len(expected - delivered_ids - outcome_ids),
        "missed_by_policy": len({f for _, f, _, s in rows if s == "missed"}),
        "duplicate_deliveries": sum(n - 1 for n in Counter((d["fire_id"], d["attempt"]) for d in ledger).values()),
        "doubled_fires": sum(1 for n in Counter(d["fire_id"] for d in ledger).values() if n > 1),
        "duplicate_committed": sum(n - 1 for n in Counter((node, f, a) for node, f, a, _ in rows).values())
        + sum(n - 1 for n in successes.values()),
        "late": sum(1 for ms in lateness if ms > LATE_MS),
        "early": sum(1 for ms in lateness if ms < -EARLY_MS),
        "max_lateness_ms": max(lateness, default=0),
        "elections": len(elections),
        "new_leader_s_max": round(max(elections), 2) if elections else None,
        "commits_without_quorum": measured.get("commits_without_quorum"),
        "fault_error": measured.get("fault_error"),
        "quorum_kept": bool(measured.get("quorum_kept")),
        "checks": measured.get("checks", {}),
    }


COLUMNS = ["scenario", "expected", "delivered", "lost", "missed_by_policy", "duplicate_deliveries",
           "doubled_fires", "duplicate_committed", "late", "early", "max_lateness_ms", "elections",
           "new_leader_s_max", "commits_without_quorum"]


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in COLUMNS) + " |" for r in results]
    notes = [f"- {r['scenario']}: " + "; ".join(f"{k} = {v}" for k, v in r["checks"].items())
             for r in results if r["checks"]]
    notes += [f"- {r['scenario']}: FAULT NOT APPLIED: {r['fault_error']}" for r in results if r["fault_error"]]
    return "\n".join(lines) + "\n" + ("\nHow each fault was seen to take effect:\n\n" + "\n".join(notes) + "\n"
                                      if notes else "")


def failures(results: list[dict[str, Any]]) -> list[str]:
    """Scenarios that lost a fire (or let one be missed while a majority kept working),
    doubled a committed outcome, committed without a quorum, or whose fault did not take effect."""
    return [r["scenario"] for r in results
            if r["lost"] or (r["quorum_kept"] and r["missed_by_policy"]) or r["duplicate_committed"]
            or r["commits_without_quorum"] or r["fault_error"]]
