"""The node's collector settings (schedb.heap): when it freezes, and what a freeze does."""

from __future__ import annotations

import gc
import weakref

from schedb import heap


def test_the_first_check_after_catching_up_freezes() -> None:
    assert heap.refreeze_due(-1, 0)


def test_growth_refreezes_only_past_a_quarter_and_the_minimum() -> None:
    assert not heap.refreeze_due(100_000, 125_000)  # a quarter exactly: not yet
    assert heap.refreeze_due(100_000, 125_001)
    assert not heap.refreeze_due(1_000, 5_000)  # fourfold, but fewer than GROWTH_JOBS_MIN more
    assert heap.refreeze_due(1_000, 6_001)
    assert not heap.refreeze_due(50_000, 10_000)  # shrinking never freezes again


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_freeze_collects_young_garbage_first_and_freezes_what_lives() -> None:
    try:
        garbage = _Cycle()
        gone = weakref.ref(garbage)
        del garbage  # young garbage: collected, not frozen
        kept = _Cycle()
        heap.freeze(jobs=0)
        assert gone() is None
        assert not any(o is kept for generation in range(3) for o in gc.get_objects(generation))
        assert kept.me is kept  # frozen, alive, never walked again
    finally:
        gc.unfreeze()
