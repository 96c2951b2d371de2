"""The simulated network between node processes: delay, loss, reordering and partitions.

Each message is a call of `handler(process, *args)` on the destination process's loop when it
arrives (at the process that was running when it was sent: a message to a process that
crashed meanwhile is lost, as its TCP connection is). By default a link keeps its order, as
TCP does; `reorder` lets each message take its own delay. A cut link (`cut`, one direction
at a time, so partitions can be asymmetric) drops what is sent on it (`hold=False`, iptables
DROP with the connection given up) or holds it until the link heals and then delivers it in
order (`hold=True`, TCP retransmitting through a DROP: old messages arrive late).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from devkit.sim.world import Process, World

Handler = Callable[..., None]  # (destination process, *args)


class Network:
    def __init__(self, world: World, rng: random.Random) -> None:
        self._world = world
        self._rng = rng
        self.delay_ms = (0.3, 3.0)  # the usual one-way delay, uniform
        self.spike_p = 0.0  # the chance of a slow message
        self.spike_ms = 300.0
        self.drop_p = 0.0
        self.reorder = False
        self._cut: dict[tuple[str, str], bool] = {}  # (from, to) → hold what is sent
        self._held: dict[tuple[str, str], list[tuple[int, Handler, tuple[Any, ...]]]] = {}
        self._last_arrival: dict[tuple[str, str], float] = {}
        self.sent = 0
        self.dropped = 0

    # -- faults ------------------------------------------------------------------------

    def cut(self, src: str, dst: str, hold: bool) -> None:
        self._cut[(src, dst)] = hold

    def heal(self, src: str, dst: str) -> None:
        """The link carries messages again; what it held goes first, in order."""
        self._cut.pop((src, dst), None)
        for incarnation, handler, args in self._held.pop((src, dst), []):
            self._schedule(src, dst, incarnation, handler, args)

    def heal_all(self) -> None:
        for src, dst in sorted(set(self._cut) | set(self._held)):
            self.heal(src, dst)

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    # -- traffic -----------------------------------------------------------------------

    def send(self, src: str, dst: str, handler: Handler, *args: Any) -> None:
        """Send to dst's current process; lost if it is not running (a refused connection)."""
        self.sent += 1
        target = self._world.processes.get(dst)
        if target is None or not target.alive:
            self.dropped += 1
            return
        if (src, dst) in self._cut:
            if self._cut[(src, dst)]:
                self._held.setdefault((src, dst), []).append((target.incarnation, handler, args))
            else:
                self.dropped += 1
            return
        if self.drop_p and self._rng.random() < self.drop_p:
            self.dropped += 1
            return
        self._schedule(src, dst, target.incarnation, handler, args)

    def _schedule(self, src: str, dst: str, incarnation: int, handler: Handler, args: tuple[Any, ...]) -> None:
        low, high = self.delay_ms
        delay_ms = self._rng.uniform(low, high)
        if self.spike_p and self._rng.random() < self.spike_p:
            delay_ms += self._rng.uniform(0, self.spike_ms)
        arrival = self._world.now + delay_ms / 1000
        if not self.reorder:
            arrival = max(arrival, self._last_arrival.get((src, dst), 0.0))
            self._last_arrival[(src, dst)] = arrival
        self._world.at(arrival, self._arrive, dst, incarnation, handler, args)

    def _arrive(self, dst: str, incarnation: int, handler: Handler, args: tuple[Any, ...]) -> None:
        target = self._world.processes.get(dst)
        if target is None or not target.alive or target.incarnation != incarnation:
            self.dropped += 1
            return
        target.loop.call_soon(handler, target, *args)


def on_process(fn: Callable[[Process], Any]) -> Handler:
    """A handler that ignores its arguments' process (for readability at call sites)."""
    return lambda process, *args: fn(process)
