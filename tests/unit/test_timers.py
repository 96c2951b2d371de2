"""DueTimers: fires grouped by instant, one loop timer each; never early; cancellable."""

from __future__ import annotations

import asyncio

from schedb.clock import wall_ms
from schedb.fsm.fires import PENDING, FireBook
from schedb.timers import DueTimers


async def test_fires_due_together_share_one_timer_and_none_runs_early() -> None:
    fired: list[tuple[tuple[str, int], int]] = []
    timers = DueTimers(lambda key, fire: fired.append((key, wall_ms())))
    due = wall_ms() + 50
    for i in range(100):
        timers.add((f"j{i}:{due}", 1), {"due_ms": due})
    timers.add(("late:1", 1), {"due_ms": due + 30})
    timers.cancel(("j7:" + str(due), 1))
    assert len(timers._handles) == 2 and len(timers) == 100
    await asyncio.sleep(0.15)
    assert len(fired) == 100 and all(at >= due for _, at in fired)  # 99 of the group, and "late"
    assert ("j7:" + str(due), 1) not in {key for key, _ in fired} and len(timers) == 0


async def test_a_new_attempt_replaces_the_waiting_one() -> None:
    fired: list[tuple[str, int]] = []
    timers = DueTimers(lambda key, fire: fired.append(key))
    timers.add(("f", 1), {"due_ms": wall_ms() + 20})
    timers.add(("f", 2), {"due_ms": wall_ms() + 40})
    assert timers.key_of("f") == ("f", 2) and len(timers) == 1
    await asyncio.sleep(0.1)
    assert fired == [("f", 2)]


def test_the_book_lists_what_changed_for_a_node_since_a_version() -> None:
    book = FireBook()
    book.add({"fire_id": "a", "node": "n1", "attempt": 1})
    book.add({"fire_id": "b", "node": "n2", "attempt": 1})
    seen = book.version_of("n1")
    book.add({"fire_id": "c", "node": "n1", "attempt": 1})
    book.move(book.fires["a"], PENDING)
    assert sorted(book.touched_since("n1", seen) or []) == ["a", "c"]
    assert book.touched_since("n1", book.version_of("n1")) == []
    assert book.touched_since("n1", -1) is None  # never looked: read everything
