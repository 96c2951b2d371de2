"""A receiver that goes down under load (issue 23): `jobs` `@every 1s` jobs call a receiver that
answers 503 for `down_s` seconds, beside 20 jobs calling a healthy one. With the default circuit
breaker (a circuit per team and target, a 30 s cool-down), the figures are the calls the dead
receiver got against the fires due meanwhile, the healthy receiver's delay meanwhile, how soon
after its return the dead receiver is called for every fire again, and what the outage's fires
were recorded as (every one of a sample of jobs)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchkit.measure import bulk_load, now_ms, summary_ms
from benchkit.scenarios import fresh
from devkit.devcluster import http
from devkit.flaky import FlakyReceiver
from schedb.timefmt import rfc3339_to_ms

HEALTHY_JOBS = 20
WARM_S = 10.0
AFTER_S = 45.0  # past the cool-down that began when the receiver went down
SAMPLED_JOBS = 10


async def outage(work: Path, jobs: int, down_s: float) -> dict[str, Any]:
    flaky = FlakyReceiver()
    try:
        with fresh(work, "breaker") as (cluster, receiver, _):
            specs = [{"id": f"down-{i:04d}", "schedule": "@every 1s", "retry": {"max_attempts": 1},
                      "webhook": {"url": f"{flaky.url}/j{i}", "timeout_s": 2}} for i in range(jobs)]
            specs += [{"id": f"up-{i:02d}", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
                      for i in range(HEALTHY_JOBS)]
            await bulk_load(cluster.followers()[0].url, specs)
            await asyncio.sleep(WARM_S)
            calls_before = flaky.calls_between(time.monotonic() - 5, time.monotonic()) / 5
            flaky.down, down_at, down_ms = True, time.monotonic(), now_ms()
            await asyncio.sleep(down_s)
            flaky.down, up_at, up_ms = False, time.monotonic(), now_ms()
            await asyncio.sleep(AFTER_S)
            return {"jobs": jobs, "down_s": down_s, "calls_per_s_before": calls_before,
                    "fires_while_down": round(jobs * (up_at - down_at)),
                    # The first second's fires (all due at one instant) leave before the first answer.
                    "calls_while_down": flaky.calls_between(down_at, up_at),
                    "calls_after_its_first_second": flaky.calls_between(down_at + 1, up_at),
                    "seconds_to_full_rate": _seconds_to_full_rate(flaky, up_at, jobs),
                    "healthy_delay": summary_ms(_healthy_delays(receiver.deliveries(), down_ms, up_ms)),
                    "outage_records": _outage_records(cluster.nodes[0].url, jobs, down_ms, up_ms)}
    finally:
        flaky.stop()


def _seconds_to_full_rate(flaky: FlakyReceiver, up_at: float, jobs: int) -> int | None:
    """The first whole second after the receiver's return in which it got 90% of the fires."""
    per_s: dict[int, int] = {}
    for at, was_down in flaky.calls:
        if at >= up_at and not was_down:
            per_s[int(at - up_at)] = per_s.get(int(at - up_at), 0) + 1
    return next((s for s in sorted(per_s) if per_s[s] >= 0.9 * jobs), None)


def _healthy_delays(deliveries: list[dict[str, Any]], start_ms: int, end_ms: int) -> list[int]:
    return [d["arrival_ms"] - rfc3339_to_ms(d["scheduled_at"]) for d in deliveries
            if start_ms <= rfc3339_to_ms(d["scheduled_at"]) < end_ms]


def _outage_records(node_url: str, jobs: int, start_ms: int, end_ms: int) -> dict[str, int]:
    """status: reason → count, over every fire of SAMPLED_JOBS jobs due during the outage."""
    out: dict[str, int] = {}
    for i in range(0, jobs, max(1, jobs // SAMPLED_JOBS)):
        _, _, body = http("GET", f"{node_url}/api/v1/jobs/down-{i:04d}/executions?limit=200")
        for row in body["executions"]:
            if start_ms <= rfc3339_to_ms(row["scheduled_at"]) < end_ms:
                key = f"{row['status']}: {(row['error'] or '').split(':')[0]}"
                out[key] = out.get(key, 0) + 1
    return out
