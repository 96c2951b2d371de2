"""The overload scenario (issue 19, target 4): more `@every 1s` jobs than this machine can
deliver, for a minute. What a scheduler should do then: deliver as many as it can, record
the rest as missed with their reason, keep its leader, and keep answering its API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchkit.measure import (
    CpuSampler,
    bulk_load,
    deliveries_between,
    every_second_jobs,
    node_pids,
    now_ms,
    scheduled_ms,
    summary_ms,
)
from benchkit.scenarios import STRAGGLER_S, fresh, sleep_until
from devkit.harness import Cluster

SAMPLED_JOBS = 100  # whose history is read afterwards: what became of each of their fires
API_READ_EVERY_S = 0.05
ANSWER_WAIT_S = 10.0  # an API answer slower than this is given up on (and counted as this slow)


async def overload(work: Path, jobs: int, seconds: int, best_sustained: float | None) -> dict[str, Any]:
    with fresh(work, f"overload-{jobs}") as (cluster, receiver, ledger):
        api_url = cluster.followers()[0].url  # asked now: overloaded, the nodes answer slowly
        await bulk_load(api_url, every_second_jobs("o", jobs, receiver.url))
        await asyncio.sleep(3.0)
        term_before = await _term(cluster)
        start = (now_ms() // 1000 + 1) * 1000
        end = start + seconds * 1000
        cpu = CpuSampler(node_pids(cluster, receiver))
        await sleep_until(start)
        cpu.start()
        api = await _reads_until(api_url + "/api/v1/jobs/o-000000", end)
        used = cpu.stop()
        term_after = await _term(cluster)
        elections = None if term_before is None or term_after is None else term_after - term_before
        await asyncio.sleep(STRAGGLER_S)
        delivered = {r["fire_id"] for r in deliveries_between(ledger.read_new(), "o-", start, end)}
        recorded = await _recorded(api_url, jobs, start, end)
        return {"jobs": jobs, "seconds": seconds, "fires_per_s": round(len(delivered) / seconds, 1),
                "best_sustained_fires_per_s": best_sustained, "recorded": recorded["by_status"],
                "unaccounted": recorded["unaccounted"], "unanswered_history_reads": recorded["unanswered"],
                "elections": elections,
                "api": summary_ms(api), "cpu_cores": used}


async def _term(cluster: Cluster) -> int | None:
    """The highest Raft term the nodes report (each election raises it); None when none answers
    within ANSWER_WAIT_S (an overloaded node may not)."""
    terms = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_WAIT_S)) as session:
        for node in cluster.nodes:
            try:
                async with session.get(node.url + "/api/v1/cluster") as resp:
                    terms.append(int((await resp.json()).get("term", 0)))
            except (TimeoutError, aiohttp.ClientError):
                continue
    return max(terms, default=None)


async def _reads_until(url: str, end_ms: int) -> list[float]:
    """One API read every API_READ_EVERY_S until end_ms: their latencies (ms)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_WAIT_S)) as session:
        while now_ms() < end_ms:
            t0 = time.perf_counter()
            try:
                async with session.get(url) as resp:
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                pass  # counted as the time it was given up after
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(API_READ_EVERY_S)
    return latencies


async def _recorded(url: str, jobs: int, start_ms: int, end_ms: int) -> dict[str, Any]:
    """What the history of SAMPLED_JOBS jobs records for the fires scheduled in [start, end), by
    each fire's last status, and how many of them it does not account for at all (neither
    delivered nor recorded with a reason)."""
    by_status: dict[str, int] = {}
    step = max(1, jobs // SAMPLED_JOBS)
    sampled = range(0, jobs, step)
    unanswered = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_WAIT_S)) as session:
        for i in sampled:
            try:
                async with session.get(f"{url}/api/v1/jobs/o-{i:06d}/executions?limit=100") as resp:
                    rows = (await resp.json())["executions"]
            except (TimeoutError, aiohttp.ClientError):
                unanswered += 1
                continue
            last: dict[str, str] = {}
            for row in reversed(rows):  # oldest first: a fire's last record wins
                if start_ms <= scheduled_ms(row["fire_id"]) < end_ms:
                    last[row["fire_id"]] = row["status"]
            for status in last.values():
                by_status[status] = by_status.get(status, 0) + 1
    expected = (len(sampled) - unanswered) * (end_ms - start_ms) // 1000
    return {"by_status": by_status, "unaccounted": expected - sum(by_status.values()), "unanswered": unanswered}
