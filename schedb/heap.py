"""The garbage collector, for a process that holds a large state for its whole life.

Python's collector walks every container object of the oldest generation in a full collection,
and starts one whenever the objects that survived since the last grew by a quarter. A node's
heap is mostly objects that never die (the modules, the replicated state's jobs), and it makes
many that live a few seconds (a fire's task while it waits for its place): measured on a
follower delivering 1,000 fires/s (make bench's N=2000), about 30 full collections a minute of
~90 ms each, 28% of its CPU with the young collections, walking the same long-lived objects
again and again.

So a node tells the collector what is long-lived: once it has caught up with the log, and again
when its jobs grew by a quarter (a bulk load), it freezes what lives (gc.freeze: never walked
again, still freed by reference counting when dropped). Freezing walks nothing, so it costs no
pause, unlike the full collections it replaces (~600 ms at 100,000 jobs, growing with the heap:
a pause that long on the Raft thread lets a follower's election timer run out). The young
generations are collected first (cheap), so little garbage is frozen; what is (a cycle among
objects that were alive, or already garbage in the oldest generation, at a freeze) stays, and
that is bounded: a freeze needs a quarter's growth, so there are a few dozen in a process's life
at most. The young generation is collected every YOUNG_THRESHOLD allocations instead of 700, so
that most short-lived objects die by reference counting before any collection sees them, and the
middle one every 5 young collections instead of 10, so that its walks stay short (at 10,000 and
20, API creates at 500/s had their p99 near 30 ms against 13-18 ms before; at these values,
10-20 ms). Measured back to back at N=1500 `@every 1s`: the three nodes' CPU per fire went from
0.57 ms to 0.41-0.44 ms, the fires' p99 from 614-704 ms to 487-539 ms.

Only `schedb node` does this (schedb.serve): the simulator runs many nodes in one process.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import structlog

log = structlog.get_logger("schedb.heap")

YOUNG_THRESHOLD = 5_000
OLDER_THRESHOLDS = (5, 10)  # the middle generation every 5 young collections: at most ~25,000 objects a walk
CHECK_EVERY_S = 10.0
GROWTH_TO_REFREEZE = 1.25  # jobs now / jobs at the last freeze, and at least GROWTH_JOBS_MIN more
GROWTH_JOBS_MIN = 5_000


def tune() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


async def keep_long_lived_frozen(caught_up: Callable[[], bool], jobs: Callable[[], int]) -> None:
    """Freeze once the state is loaded, then again when the jobs grew by a quarter."""
    frozen_jobs = -1
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        try:
            if not caught_up():
                continue
            count = jobs()
            if refreeze_due(frozen_jobs, count):
                freeze(count)
                frozen_jobs = count
        except Exception:
            log.exception("heap_freeze_failed")


def refreeze_due(frozen_jobs: int, jobs: int) -> bool:
    """Never frozen (frozen_jobs < 0), or grown by a quarter and by GROWTH_JOBS_MIN."""
    return frozen_jobs < 0 or jobs > max(frozen_jobs * GROWTH_TO_REFREEZE, frozen_jobs + GROWTH_JOBS_MIN)


def freeze(jobs: int) -> None:
    """Collect the young generations (cheap), then freeze everything that lives."""
    collected = gc.collect(1)
    gc.freeze()
    log.info("heap_frozen", jobs=jobs, objects=gc.get_freeze_count(), collected=collected)
