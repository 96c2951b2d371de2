"""A bounded gate for webhook requests that admits waiters by priority.

At most `capacity` requests run at once on an executor. When it is saturated,
the next free place goes to the most urgent waiting fire (critical, high,
normal, low), and among equals to the one that waited longest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

PRIORITY_RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}


class PriorityGate:
    def __init__(self, capacity: int) -> None:
        assert capacity > 0, "a gate needs room for at least one request"
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._waiting = 0  # waiters not yet granted nor cancelled (the heap also holds cancelled ones)

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def place(self, priority: str) -> AsyncIterator[None]:
        await self._acquire(PRIORITY_RANK.get(priority, PRIORITY_RANK["normal"]))
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, rank: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._order), granted))
        self._waiting += 1
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the place was handed over just as we were cancelled: pass it on
            else:
                self._waiting -= 1
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, granted = heapq.heappop(self._waiters)
            if not granted.done():
                granted.set_result(None)
                self._waiting -= 1
                return
        self._free += 1
