"""An asyncio event loop on a simulated clock, stepped by the simulator.

Each simulated node runs its real code (executor, dispatcher, clock watch, the Raft model) on
a loop of its own, so that pausing a node (as SIGSTOP does) is simply not stepping its loop,
and crashing it is dropping the loop with everything on it. `time()` is the node's simulated
monotonic clock: asyncio's sleeps, timeouts and call_later follow it. The loop never waits:
the simulator asks `next_due()` and steps the node whose turn it is with `run_once()`.

This leans on BaseEventLoop's `_run_once` and its `_ready`/`_scheduled` queues (CPython 3.11,
as pinned): the same machinery that runs the node in production, minus the selector.
"""

from __future__ import annotations

import asyncio
import heapq
from asyncio import events
from collections.abc import Callable
from typing import Any


class _NoSelector:
    """BaseEventLoop asks its selector for I/O events with a timeout: there is no I/O here."""

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._now = clock
        self._selector = _NoSelector()
        self._clock_resolution = 1e-6  # true time → loop time rounds: a timer due now must run now
        # What escaped a callback or a task (asyncio would log it and go on): a bug in the node's
        # code, or an invariant that broke inside it; the simulator stops the run with it.
        self.failure: BaseException | None = None
        self.set_exception_handler(self._caught)

    def _caught(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.failure is None:
            self.failure = context.get("exception") or RuntimeError(str(context.get("message")))

    def time(self) -> float:
        return self._now()

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # call_soon_threadsafe: nobody sleeps in select here

    def next_due(self) -> float | None:
        """The loop time of its next callback: now if one is ready, else its first live timer."""
        if self._ready:
            return self.time()
        scheduled = self._scheduled
        while scheduled and scheduled[0]._cancelled:
            heapq.heappop(scheduled)._scheduled = False
            self._timer_cancelled_count -= 1
        return scheduled[0]._when if scheduled else None

    def run_once(self) -> None:
        """Run what is due now (ready callbacks, and timers whose time came), as the running loop."""
        events._set_running_loop(self)
        try:
            self._run_once()
        finally:
            events._set_running_loop(None)

    def discard(self) -> None:
        """The process died: nothing on this loop ever runs again (tasks are dropped unfinished)."""
        for handle in [*self._ready, *self._scheduled]:
            handle.cancel()
        self._ready.clear()
        self._scheduled.clear()
        self._timer_cancelled_count = 0
