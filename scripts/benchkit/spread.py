"""Spread load: fires due evenly over each second, not all at its first millisecond.

The sustained scenarios give every job `@every 1s`, so each second opens with a burst of N
requests and their p99 is mostly the time to get that burst out. Here the same rate comes as
a steady stream, which measures the pipeline's own delay per fire (plan, assign, commit, the
executor's timer, the call). Schedules are whole seconds (`@every` is aligned to the epoch,
cron's finest field is the second), so the stream is made of one-shot jobs: `@at` takes
milliseconds, and rate times seconds of them are loaded first, one due every 1/rate s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchkit.measure import bulk_load, now_ms
from benchkit.scenarios import fresh, window
from schedb.timefmt import ms_to_rfc3339

LOAD_MARGIN_S = 8.0  # starting the cluster's planning and loading the first batches
LOAD_RATE_GUESS = 2_000  # jobs/s the bulk API takes at least, to place the window after the load


async def spread(work: Path, rate: int, seconds: int) -> dict[str, Any]:
    """`rate` fires/s for `seconds`, one due every 1/rate s; their delay, losses and CPU."""
    with fresh(work, f"spread-{rate}") as (cluster, receiver, ledger):
        count = rate * seconds
        start = (now_ms() // 1000 + int(LOAD_MARGIN_S + count / LOAD_RATE_GUESS)) * 1000
        due = [start + i * 1000 // rate for i in range(count)]
        specs = [{"id": f"sp-{i:07d}", "schedule": f"@at {ms_to_rfc3339(at)}", "webhook": {"url": receiver.url}}
                 for i, at in enumerate(due)]
        await bulk_load(cluster.followers()[0].url, specs)
        if now_ms() > start - 1_000:
            raise RuntimeError("loading the jobs took longer than planned: raise LOAD_MARGIN_S")
        return {"rate": rate, "seconds": seconds, **await window(cluster, receiver, ledger, "sp-", start, seconds,
                                                                  count)}
