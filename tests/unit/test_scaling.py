"""The number of delivery workers (schedb.scaling): pressure held adds one, calm held retires one,
the band between changes nothing, and two changes are at least scale_interval_s apart."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schedb.config import ExecutorSection
from schedb.scaling import Load, Scaler

SETTINGS = ExecutorSection(workers_min=1, workers_max=4, scale_up_inflight=60, scale_up_cpu=0.6, scale_up_lag_ms=90,
                           scale_up_after_s=3.0, scale_down_after_s=10.0, scale_interval_s=5.0)
BUSY = {"inflight_per_worker": 60.0, "cpu_share": 0.1, "lag_ms": 0.0}  # one level at its mark is pressure
CALM = {"inflight_per_worker": 19.0, "cpu_share": 0.19, "lag_ms": 29.0}  # every level below a third
BAND = {"inflight_per_worker": 30.0, "cpu_share": 0.1, "lag_ms": 0.0}  # neither


def _run(scaler: Scaler, workers: int, level: dict[str, float], start_s: float,
         end_s: float) -> list[tuple[float, int]]:
    """One sample a second from start_s to end_s; the (time, count) of every change."""
    changes = []
    for second in range(int(start_s), int(end_s)):
        decided = scaler.decide(workers, Load(float(second), **level))
        if decided != workers:
            changes.append((float(second), decided))
            workers = decided
    return changes


def test_pressure_held_adds_one_worker_at_a_time_and_never_past_the_maximum() -> None:
    changes = _run(Scaler(SETTINGS), 1, BUSY, 0, 60)
    assert changes == [(3.0, 2), (8.0, 3), (13.0, 4)]  # after 3 s of pressure, then one per interval


def test_every_level_alone_is_pressure() -> None:
    for level in ({**BAND, "cpu_share": 0.6}, {**BAND, "lag_ms": 90.0}, BUSY):
        assert _run(Scaler(SETTINGS), 1, level, 0, 4) == [(3.0, 2)], level


def test_calm_held_retires_one_at_a_time_down_to_the_minimum() -> None:
    changes = _run(Scaler(SETTINGS), 4, CALM, 0, 60)
    assert changes == [(10.0, 3), (21.0, 2), (32.0, 1)]  # a period counts from the sample after a change


def test_the_band_between_changes_nothing_and_restarts_both_clocks() -> None:
    scaler = Scaler(SETTINGS)
    assert _run(scaler, 2, BUSY, 0, 2) == []
    assert _run(scaler, 2, BAND, 2, 30) == []  # pressure cut short: forgotten
    assert _run(scaler, 2, BUSY, 30, 32) == []  # so two more seconds of it are not enough
    assert _run(scaler, 2, CALM, 32, 41) == []
    assert _run(scaler, 2, BAND, 41, 42) == []
    assert _run(scaler, 2, CALM, 42, 53) == [(52.0, 1)]  # calm again from 42: ten seconds more


def test_a_load_that_swings_across_the_band_does_not_flap() -> None:
    """Pressure then calm then pressure, each shorter than its hold: the count never moves."""
    scaler = Scaler(SETTINGS)
    changes = []
    for cycle in range(20):
        changes += _run(scaler, 2, BUSY, cycle * 5, cycle * 5 + 2)
        changes += _run(scaler, 2, CALM, cycle * 5 + 2, cycle * 5 + 5)
    assert changes == []


def test_a_count_outside_the_bounds_is_brought_inside_at_once() -> None:
    assert Scaler(SETTINGS).decide(0, Load(0.0, **BAND)) == 1
    assert Scaler(SETTINGS).decide(9, Load(0.0, **BUSY)) == 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([BUSY, CALM, BAND]), st.integers(1, 15)), max_size=30))
def test_any_load_keeps_the_count_in_bounds_moving_by_one_with_changes_an_interval_apart(
        phases: list[tuple[dict[str, float], int]]) -> None:
    scaler, workers, now, last_change = Scaler(SETTINGS), 1, 0.0, None
    for level, seconds in phases:
        for _ in range(seconds):
            decided = scaler.decide(workers, Load(now, **level))
            if decided != workers:
                assert abs(decided - workers) == 1
                assert last_change is None or now - last_change >= SETTINGS.scale_interval_s
                assert (decided > workers) == (level is BUSY)
                last_change, workers = now, decided
            assert SETTINGS.workers_min <= workers <= SETTINGS.workers_max
            now += 1.0
