"""Pause/resume storms: jobs paused and resumed a few seconds before a fire that the leader
has already assigned (inside the lookahead), round after round, while the load runs."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaoskit.common import Ctx, FaultNotApplied, Measured, now_ms
from chaoskit.ledger import create_job
from devkit.devcluster import http

STORM_JOBS = 20
ROUNDS = 3
PERIOD_MS = 10_000  # `*/10 * * * * *`
LEAD_MS = 3_000  # before the fire: inside the 5 s lookahead, so the fire is already assigned


def pause_resume_storm(ctx: Ctx) -> Measured:
    urls = [n.url for n in ctx.cluster.nodes]
    jobs = [(f"chaos-p{i:02d}", urls[i % len(urls)]) for i in range(STORM_JOBS)]
    for job_id, url in jobs:
        if job_id not in ctx.jobs:
            create_job(ctx, url, job_id, "*/10 * * * * *", PERIOD_MS)
    checks: dict[str, Any] = {}
    excluded: list[str] = []
    fire_times: list[int] = []
    for round_no in range(1, ROUNDS + 1):
        fire_ms = _next_fire(now_ms() + LEAD_MS + 1_500)
        fire_times.append(fire_ms)
        time.sleep(max(0.0, (fire_ms - LEAD_MS - now_ms()) / 1000))
        started = now_ms()
        with ThreadPoolExecutor(STORM_JOBS) as pool:
            done = dict(zip([j for j, _ in jobs], pool.map(lambda job: _toggle(*job), jobs), strict=True))
        # A job resumed only after its instant was paused at it: that fire is rightly not due.
        excluded += [f"{job_id}:{fire_ms}" for job_id, at in done.items() if at >= fire_ms]
        checks[f"round {round_no}"] = (f"{len(jobs)} jobs paused and resumed from {fire_ms - started} ms "
                                       f"before their fire, last answer {fire_ms - max(done.values())} ms before it")
    time.sleep(max(0.0, (fire_ms + 2_000 - now_ms()) / 1000))  # the last round's fire is in the window
    checks["fires excluded (resumed after their instant)"] = len(excluded)
    checks["deliveries of the stormed fires by attempt"] = _attempts(ctx, {f"{j}:{ms}" for j, _ in jobs
                                                                           for ms in fire_times})
    return {"checks": checks, "excluded": excluded, "quorum_kept": True}


def _attempts(ctx: Ctx, fire_ids: set[str]) -> dict[int, int]:
    """Each stormed fire is due once; a second attempt shows it was re-created or moved."""
    return dict(sorted(Counter(d["attempt"] for d in ctx.receiver.deliveries() if d["fire_id"] in fire_ids).items()))


def _next_fire(after_ms: int) -> int:
    return (after_ms // PERIOD_MS + 1) * PERIOD_MS


def _toggle(job_id: str, url: str) -> int:
    """Pause, then resume, through one node; checks each took effect; returns when it was done."""
    for action, paused in (("pause", True), ("resume", False)):
        for _ in range(50):
            code, _, job = http("POST", f"{url}/api/v1/jobs/{job_id}/{action}", {})
            if code != 429:
                break
            time.sleep(0.05)
        if code != 200 or job.get("paused") is not paused:
            raise FaultNotApplied(f"{action} {job_id} through {url}: {code} {job}")
    return now_ms()
