"""A few seeds of the simulator on every `make test`: each one fails when one of the defects
of issue 16 is brought back (docs/simulation.md has the table: which change, which invariant),
so each is a regression test of the whole cluster under its faults. `make sim` runs new
seeds; docs/simulation.md says how to replay one."""

from __future__ import annotations

import pytest

from devkit.sim.run import Options, run_seed

# seed → the defects of issue 16 it catches when brought back
FOUND = {
    0: "1 (pause/resume doubled fires), 3 (a fast clock moved replicated time), 6 (unbounded catch-up), "
       "8 (a new leader buried its unstarted fires as unknown)",
    1: "1, 5 (limits from each node's own config)",
    24: "1, 7 (a late skip of an old attempt ended the current one), 8",
    45: "1, 8",
    635: "2 (a thawed follower's fence opened on the first message after a gap; seed 45 caught it before "
         "2026-12-05's fixes)",
}


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_a_seed_that_catches_an_old_defect_passes(seed: int) -> None:
    result = run_seed(seed, Options())
    assert result.ok, f"{result.violation} (catches defect {FOUND[seed]}; replay: make sim SEED={seed})"
    assert result.calls > 1_000 and result.simulated_s >= 600  # ten simulated minutes of real work


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = (run_seed(7, Options(minutes=3, full_trace=True)) for _ in range(2))
    assert first.trace == second.trace and len(first.trace.splitlines()) > 1_000
