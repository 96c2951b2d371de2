"""The node's collector settings (schedb.heap): when it refreezes, and what a refreeze does."""

from __future__ import annotations

import gc
import weakref

from schedb import heap


def test_the_first_check_after_catching_up_freezes() -> None:
    assert heap.refreeze_due(-1, 0, 0.0)


def test_growth_refreezes_only_past_a_quarter_and_the_minimum() -> None:
    assert not heap.refreeze_due(100_000, 125_000, 60.0)  # a quarter exactly: not yet
    assert heap.refreeze_due(100_000, 125_001, 60.0)
    assert not heap.refreeze_due(1_000, 5_000, 60.0)  # fourfold, but fewer than GROWTH_JOBS_MIN more
    assert heap.refreeze_due(1_000, 6_001, 60.0)


def test_a_long_frozen_heap_is_refrozen_whatever_its_size() -> None:
    """What a freeze kept that later became cyclic garbage is collected at the latest then."""
    assert not heap.refreeze_due(50, 40, heap.REFREEZE_S)
    assert heap.refreeze_due(50, 40, heap.REFREEZE_S + 1)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_refreeze_collects_frozen_cycles_and_freezes_what_lives() -> None:
    try:
        garbage = _Cycle()
        gone = weakref.ref(garbage)
        gc.freeze()  # the cycle is frozen while alive...
        del garbage  # ...and garbage now, which no collection sees
        gc.collect()
        assert gone() is not None
        kept = _Cycle()
        heap.refreeze(jobs=0)
        assert gone() is None  # the refreeze unfroze and collected it
        assert gc.get_freeze_count() > 0 and kept.me is kept
    finally:
        gc.unfreeze()
