"""Simulated time and the processes that live in it.

True time (`World.now`, seconds since the run began) is the simulator's alone; no node reads it.
Each node process has its own clocks, derived from true time: a monotonic clock (true time
plus a fixed offset: it never steps, and it keeps running while the process is paused, as
CLOCK_MONOTONIC does under SIGSTOP) and a wall clock (true time plus an offset that faults
change, slowly or in steps). `SimClock`, installed as schedb.clock's clock, answers for the
process whose code is running (`World.current`).

The world advances one event at a time: a global event (a message arriving, a fault, an
operator's action) or one step of a process's event loop (schedb.clock's readings and the
loop's timers both follow the process's clocks). Ties go to global events first, then to
processes in id order, so the same seed always runs the same way.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from devkit.sim.loop import VirtualLoop

T0_MS = 1_800_000_000_000  # the wall clock at true time 0 (2027-01-15)


# Steps at one instant beyond this: something reschedules itself at once, for ever.
SAME_INSTANT_STEPS_MAX = 200_000
STEPS_MAX = 3_000_000  # in all: something wakes far too often


class Livelock(RuntimeError):
    """Simulated time stopped moving: a callback or task keeps waking itself."""


class Process:
    """One incarnation of a node's process: its loop and its clocks. A crash ends it; a
    restart is a new Process with the same node id (and the same clocks: they are the host's)."""

    def __init__(self, world: World, node_id: str, incarnation: int) -> None:
        self.world = world
        self.node_id = node_id
        self.incarnation = incarnation
        self._alive = True
        self._paused = False
        self.mono_offset = world.mono_offset[node_id]  # fixed: a monotonic clock never steps
        self.loop = VirtualLoop(self.monotonic)

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, alive: bool) -> None:
        self._alive = alive
        self.world.processes_changed()

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, paused: bool) -> None:
        self._paused = paused
        self.world.processes_changed()

    def monotonic(self) -> float:
        return self.world.now + self.mono_offset

    def wall_ms(self) -> int:
        return math.floor((self.world.now + self.world.wall_offset[self.node_id]) * 1000) + T0_MS


class World:
    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.processes: dict[str, Process] = {}  # node id → its current incarnation
        self.mono_offset: dict[str, float] = {}
        self.wall_offset: dict[str, float] = {}  # seconds; faults change it
        self.last_clock_step = -1e9  # true time of the last step of any node's wall clock
        self.current: Process | None = None
        self.steps = 0
        self._steps_now = 0
        self._running_list: list[Process] | None = None

    def add_host(self, node_id: str, mono_offset: float, wall_offset: float) -> None:
        self.mono_offset[node_id] = mono_offset
        self.wall_offset[node_id] = wall_offset

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """A global event at true time `when` (not before now)."""
        self._seq += 1
        heapq.heappush(self._events, (max(when, self.now), self._seq, fn, args))

    def after(self, delay_s: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay_s, fn, *args)

    def alive(self, node_id: str) -> bool:
        process = self.processes.get(node_id)
        return process is not None and process.alive

    def run_until(self, end: float, after_step: Callable[[], None] | None = None) -> None:
        """Advance to true time `end`, one event at a time."""
        events = self._events
        while True:
            event_at = events[0][0] if events else math.inf
            step_at, stepper = math.inf, None
            for process in self._running():
                due = process.loop.next_due()
                if due is not None:
                    due -= process.mono_offset
                    if due < step_at:
                        step_at, stepper = due, process
            when = event_at if event_at <= step_at else step_at
            if when > end:
                self.now = end
                return
            if when > self.now:
                self.now, self._steps_now = when, 0
            self._steps_now += 1
            if self._steps_now > SAME_INSTANT_STEPS_MAX:
                raise Livelock(f"{SAME_INSTANT_STEPS_MAX} steps at {self.now:.3f} s without time moving")
            self.steps += 1
            if self.steps > STEPS_MAX:
                raise Livelock(f"{STEPS_MAX} steps by {self.now:.3f} s (a seed takes 100,000 to 200,000)")
            if event_at <= step_at:
                _, _, fn, args = heapq.heappop(events)
                fn(*args)
            else:
                assert stepper is not None
                self.run_step(stepper)
            if after_step is not None:
                after_step()

    def processes_changed(self) -> None:
        """A process started, died, paused or resumed: the running list is rebuilt."""
        self._running_list = None

    def _running(self) -> list[Process]:
        """The processes that may step, in node order."""
        if self._running_list is None:
            self._running_list = [self.processes[n] for n in sorted(self.processes)
                                  if self.processes[n].alive and not self.processes[n].paused]
        return self._running_list

    def run_step(self, process: Process) -> None:
        self.current = process
        try:
            process.loop.run_once()
        finally:
            self.current = None
        if process.loop.failure is not None:
            raise process.loop.failure


class SimClock:
    """schedb.clock's clock in the simulator: the running process's clocks (true time when the
    simulator itself reads it)."""

    def __init__(self, world: World) -> None:
        self._world = world

    def wall_ms(self) -> int:
        process = self._world.current
        return process.wall_ms() if process is not None else math.floor(self._world.now * 1000) + T0_MS

    def monotonic(self) -> float:
        process = self._world.current
        return process.monotonic() if process is not None else self._world.now
