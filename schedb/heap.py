"""The garbage collector, for a process that holds a large state for its whole life.

Python's collector walks every container object of the oldest generation in a full collection,
and starts one whenever the objects that survived since the last grew by a quarter. A node's
heap is mostly objects that never die (the modules, the replicated state's jobs), and it makes
many that live a few seconds (a fire's task while it waits for its place): measured on a
follower delivering 1,000 fires/s (make bench's N=2000), about 30 full collections a minute of
~90 ms each, 28% of its CPU with the young collections, walking the same long-lived objects
again and again.

So a node tells the collector what is long-lived: once it has caught up with the log, and again
when its jobs grew by a quarter (a bulk load) or every REFREEZE_S, it collects everything once
and freezes what is left (gc.freeze: never walked again, still freed by reference counting when
dropped). A cycle that becomes garbage after it was frozen waits for the next refreeze, which
unfreezes and collects first: that bounds what can wait. The young generation is collected
every YOUNG_THRESHOLD allocations instead of 700, so that most short-lived objects die by
reference counting before any collection sees them. The same run then spent 9-11% of its CPU
collecting, and the followers 25% less CPU in all.

Only `schedb node` does this (schedb.serve): the simulator runs many nodes in one process.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

import structlog

from schedb.clock import monotonic

log = structlog.get_logger("schedb.heap")

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (20, 10)
CHECK_EVERY_S = 10.0
REFREEZE_S = 900.0
GROWTH_TO_REFREEZE = 1.25  # jobs now / jobs at the last freeze, and at least GROWTH_JOBS_MIN more
GROWTH_JOBS_MIN = 5_000


def tune() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


async def keep_long_lived_frozen(caught_up: Callable[[], bool], jobs: Callable[[], int]) -> None:
    """Freeze once the state is loaded, then again on growth or after REFREEZE_S."""
    frozen_jobs, frozen_at = -1, 0.0
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        if not caught_up():
            continue
        count = jobs()
        if refreeze_due(frozen_jobs, count, monotonic() - frozen_at):
            refreeze(count)
            frozen_jobs, frozen_at = count, monotonic()


def refreeze_due(frozen_jobs: int, jobs: int, frozen_for_s: float) -> bool:
    """Never frozen (frozen_jobs < 0), grown by a quarter and GROWTH_JOBS_MIN, or frozen too long."""
    if frozen_jobs < 0 or frozen_for_s > REFREEZE_S:
        return True
    return jobs > max(frozen_jobs * GROWTH_TO_REFREEZE, frozen_jobs + GROWTH_JOBS_MIN)


def refreeze(jobs: int) -> None:
    """Unfreeze, collect everything (one pause chosen here instead of many), freeze what lives."""
    started = time.perf_counter()  # a duration for the log line, not a time anything depends on
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    log.info("heap_frozen", jobs=jobs, objects=gc.get_freeze_count(), collected=collected,
             pause_ms=round((time.perf_counter() - started) * 1000, 1))
