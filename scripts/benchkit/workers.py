"""Delivery worker processes (issue 23): the same sustained load, `jobs` `@every 1s`, delivered by
each node's own loop (workers 0), then by 1 and by 2 worker processes per node (workers_min =
workers_max, so the count stays put). The figures: delivered fires/s, delay, and CPU per fire
with every node's workers counted (CpuSampler's children)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from benchkit.measure import bulk_load, every_second_jobs, now_ms
from benchkit.scenarios import fresh, window

SETTINGS = (0, 1, 2)


async def workers(work: Path, jobs: int, seconds: int) -> list[dict[str, Any]]:
    out = []
    for count in SETTINGS:
        extra = f"\n[executor]\nworkers_min = {count}\nworkers_max = {count}\n"
        with fresh(work, f"workers-{count}", extra) as (cluster, receiver, ledger):
            await bulk_load(cluster.followers()[0].url, every_second_jobs("w", jobs, receiver.url))
            await asyncio.sleep(3.0)
            start = (now_ms() // 1000 + 1) * 1000
            figures = await window(cluster, receiver, ledger, "w-", start, seconds, jobs * seconds, children=True)
            out.append({"workers": count, "jobs": jobs, "seconds": seconds, **figures})
    return out
