"""The executor's request gate: bounded, and urgent fires first when saturated."""

from __future__ import annotations

import asyncio

from schedb.gate import PriorityGate


async def test_saturated_gate_admits_by_priority_then_arrival() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    release_first = asyncio.Event()

    async def use(name: str, priority: str, hold: asyncio.Event | None = None) -> None:
        async with gate.place(priority):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(use("first", "low", release_first))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(use(name, prio)) for name, prio in
               (("low-1", "low"), ("normal-1", "normal"), ("critical", "critical"), ("high", "high"),
                ("normal-2", "normal"))]
    await asyncio.sleep(0)
    assert order == ["first"] and gate.waiting == 5
    release_first.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "critical", "high", "normal-1", "normal-2", "low-1"]


async def test_a_cancelled_waiter_does_not_leak_a_place() -> None:
    gate = PriorityGate(1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with gate.place("normal"):
            await hold.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(gate.place("high").__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    hold.set()
    await task
    async with gate.place("low"):  # the place came back
        pass
    assert gate.waiting == 0


async def test_cancelled_waiters_leave_the_count_and_pass_nothing_on() -> None:
    gate = PriorityGate(1)
    admitted: list[str] = []

    async def request(name: str, hold_s: float) -> None:
        async with gate.place("normal"):
            admitted.append(name)
            await asyncio.sleep(hold_s)

    first = asyncio.create_task(request("first", 0.05))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(request(n, 0)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert gate.waiting == 3
    queued[1].cancel()
    await asyncio.sleep(0)
    assert gate.waiting == 2
    await asyncio.gather(first, queued[0], queued[2])
    assert admitted == ["first", "a", "c"] and gate.waiting == 0
    async with gate.place("low"):  # the place came back: no waiter, no wait
        assert gate.waiting == 0
