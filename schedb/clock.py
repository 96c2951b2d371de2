"""This node's clocks, for every runtime module: the wall clock (ms since the epoch) and the
monotonic clock (seconds). The state machine reads neither: replicated time is the leader's
(schedb.fsm.replicated_time) and comes to it in the commands. Everything else asks here, so
that a test or the simulator can put a clock of its own in place (`use`), as TigerStyle
treats time: an input.

What this does not cover: asyncio's own timers (sleep, call_later, wait_for) follow the event
loop's clock, and pysyncobj its own; a simulator replaces the loop for those.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    def wall_ms(self) -> int: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The operating system's clocks."""

    def wall_ms(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told: both readings advance together, unless a test steps
    the wall clock alone (an operator's `date -s`, an NTP step)."""

    def __init__(self, wall_ms: int, monotonic: float = 1_000.0) -> None:
        self._wall_ms = wall_ms
        self._monotonic = monotonic

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time does not go back; step_wall() moves the wall clock alone"
        self._monotonic += seconds
        self._wall_ms += round(seconds * 1000)

    def step_wall(self, ms: int) -> None:
        self._wall_ms += ms


_clock: Clock = SystemClock()


def wall_ms() -> int:
    """This node's wall clock, ms since the epoch."""
    return _clock.wall_ms()


def wall_s() -> float:
    return _clock.wall_ms() / 1000


def monotonic() -> float:
    """This node's monotonic clock, seconds (for intervals: never steps)."""
    return _clock.monotonic()


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Every runtime module reads `clock` until the block ends."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
