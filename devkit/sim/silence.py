"""When a node was cut off from the leader: paused, or a link between the two cut, either way.

A node cut off from the leader until shortly before the leader gave one of its fires, whose
lease had ended, to another node could not have committed that fire's outcome in time: to the
cluster it was as good as dead, and the fire's second delivery is the at-least-once
redelivery DESIGN.md allows (checks.Referee's doubled_delivery). Intervals are closed
[start, end]; an open one ends at infinity.
"""

from __future__ import annotations

from devkit.sim.world import World

OPEN = float("inf")


class CutOffs:
    def __init__(self, world: World) -> None:
        self._world = world
        self._paused: dict[str, list[list[float]]] = {}  # node → its pauses
        self._cut: dict[tuple[str, str], list[list[float]]] = {}  # (from, to) → when the link was cut

    def pause(self, node: str, paused: bool) -> None:
        """The node's process paused or resumed (a crash of a paused process ends its pause)."""
        self._toggle(self._paused.setdefault(node, []), paused)

    def links(self, cut: set[tuple[str, str]], links: list[tuple[str, str]]) -> None:
        """The network's cut links now, out of all links."""
        for link in links:
            self._toggle(self._cut.setdefault(link, []), link in cut)

    def cut_off_within(self, node: str, leader: str, since: float, until: float) -> bool:
        """Was node paused, or cut from leader (either way), at some moment of [since, until]?"""
        spans = [*self._paused.get(node, ()), *self._cut.get((node, leader), ()), *self._cut.get((leader, node), ())]
        return any(start <= until and end >= since for start, end in spans)

    def _toggle(self, spans: list[list[float]], on: bool) -> None:
        is_on = bool(spans) and spans[-1][1] == OPEN
        if on and not is_on:
            spans.append([self._world.now, OPEN])
        elif is_on and not on:
            spans[-1][1] = self._world.now
