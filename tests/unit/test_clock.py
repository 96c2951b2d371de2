"""schedb.clock: every runtime module reads time through it, so a test (or the simulator) puts a
clock of its own in place."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from schedb import clock
from schedb.clock import FakeClock
from schedb.timers import DueTimers

SCHEDB = Path(__file__).parents[2] / "schedb"


def test_a_fake_clock_is_what_runtime_modules_read() -> None:
    fake = FakeClock(wall_ms=1_800_000_000_000, monotonic=50.0)
    with clock.use(fake):
        assert (clock.wall_ms(), clock.monotonic()) == (1_800_000_000_000, 50.0)
        fake.advance(1.5)
        assert (clock.wall_ms(), clock.monotonic()) == (1_800_000_001_500, 51.5)
        fake.step_wall(-3_600_000)  # the wall clock steps back an hour; the monotonic one does not
        assert (clock.wall_ms(), clock.monotonic()) == (1_799_996_401_500, 51.5)
    assert abs(clock.wall_ms() - 1_800_000_000_000) > 1_000  # the system clock again


async def test_timers_read_the_injected_clock() -> None:
    """A fire due an hour from the system's now is due at once by a clock an hour ahead."""
    ahead_ms = clock.wall_ms() + 3_600_000
    fired: list[str] = []
    with clock.use(FakeClock(wall_ms=ahead_ms)):
        timers = DueTimers(lambda key, fire: fired.append(key[0]))
        timers.add(("job:1", 1), {"fire_id": "job:1", "due_ms": ahead_ms - 1})
        for _ in range(3):
            await asyncio.sleep(0)
    assert fired == ["job:1"]


def test_no_runtime_module_reads_the_system_clock_itself() -> None:
    """time.time() and time.monotonic() only in schedb/clock.py (and none in the state machine)."""
    offenders = []
    for path in sorted(SCHEDB.rglob("*.py")):
        if path.name == "clock.py" and path.parent == SCHEDB:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "time" \
                    and node.attr in ("time", "monotonic", "time_ns", "monotonic_ns"):
                offenders.append(f"{path.relative_to(SCHEDB.parent)}:{node.lineno} time.{node.attr}")
    assert offenders == []
