"""The webhook receiver every simulated job calls, and its ledger of calls.

A call reaches the receiver after a network delay and is answered after the receiver's
latency: fast, slow, failing (HTTP 500) or hanging (no answer: the call times out). How it
answers is drawn per job from the seed, and faults switch the whole receiver into a mode for
a while. The ledger records each call as the executor made it (its node, fire id, attempt,
true time) and what the caller saw: the invariants read it (schedb's promise is about what
reaches receivers).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devkit.sim.world import World
from schedb.clock import wall_ms
from schedb.commands import Outcome


@dataclass
class Call:
    node: str
    incarnation: int
    fire_id: str
    attempt: int
    job_id: str
    at: float  # true time of the call
    status: str = "in_flight"  # what the caller saw: succeeded, failed, timed_out (in_flight: no answer yet)
    instance: int = 0  # the fire's instance: a backfill fires a past occurrence again (checks.Referee)


class Receiver:
    def __init__(self, world: World, rng: random.Random, on_call: Callable[[Call], None]) -> None:
        self._world = world
        self._on_call = on_call
        self._rng = rng
        self.mode = "normal"  # normal | slow | failing | hanging | down (faults set it)
        self._job_mode: dict[str, str] = {}
        self.calls: list[Call] = []

    def set_job_modes(self, job_ids: list[str]) -> None:
        """Most jobs' webhooks answer at once; a few are slow, flaky or hanging throughout."""
        for job_id in job_ids:
            self._job_mode[job_id] = self._rng.choices(("normal", "slow", "flaky", "hanging"), (85, 7, 6, 2))[0]

    async def call(self, node: str, incarnation: int, fire: dict[str, Any], spec: dict[str, Any]) -> Outcome:
        """One webhook call from an executor (runs on its loop, its clocks)."""
        started_ms = wall_ms()
        call = Call(node, incarnation, fire["fire_id"], fire["attempt"], fire["job_id"], self._world.now)
        self.calls.append(call)
        self._on_call(call)
        timeout_s = float(spec["webhook"]["timeout_s"])
        answer_s, http_status = self._answer(fire["job_id"])
        if answer_s is None or answer_s >= timeout_s:
            await asyncio.sleep(timeout_s)
            call.status = "timed_out"
            return Outcome(fire["fire_id"], fire["attempt"], "timed_out", 0, started_ms, wall_ms(),
                           f"no answer within {timeout_s:g} s")
        await asyncio.sleep(answer_s)
        call.status = "succeeded" if 200 <= http_status < 300 else "failed"
        error = "" if call.status == "succeeded" else f"HTTP {http_status}" if http_status else "connection refused"
        return Outcome(fire["fire_id"], fire["attempt"], call.status, http_status, started_ms, wall_ms(), error)

    def _answer(self, job_id: str) -> tuple[float | None, int]:
        """(seconds to the answer, None: never; its HTTP status)."""
        mode = self.mode if self.mode != "normal" else self._job_mode.get(job_id, "normal")
        rng = self._rng
        if mode == "hanging":
            return None, 0
        if mode == "down":
            return rng.uniform(0.0005, 0.002), 0  # connection refused
        if mode == "failing" or (mode == "flaky" and rng.random() < 0.3):
            return rng.uniform(0.001, 0.05), 500
        if mode == "slow":
            return rng.uniform(0.5, 4.0), 200
        return rng.uniform(0.001, 0.03), 200
