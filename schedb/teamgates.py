"""An executor's per-team gates: each team's concurrent_webhooks quota on this node.

A team's gate exists while calls of that team hold or await it, and goes with
the last one: teams come and go (their jobs deleted, their quota changed), and
an executor runs for months.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Gate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0  # calls holding or awaiting a place


class TeamGates:
    def __init__(self) -> None:
        self._gates: dict[str, _Gate] = {}

    def __len__(self) -> int:
        return len(self._gates)

    @asynccontextmanager
    async def hold(self, team: str, limit: int) -> AsyncIterator[None]:
        """One of the team's `limit` places; a new limit applies to new calls."""
        gate = self._gates.get(team)
        if gate is None or gate.limit != limit:
            gate = self._gates[team] = _Gate(limit)
        gate.users += 1
        try:
            async with gate.semaphore:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0 and self._gates.get(team) is gate:  # not a newer gate of the team
                del self._gates[team]
