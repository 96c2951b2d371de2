"""A few seeds of the simulator on every `make test`: each was a failure once (a doubled or
lost fire, fixed since), so each is a regression test of the whole cluster under its faults.
`make sim` runs new seeds; docs/simulation.md says how to replay one."""

from __future__ import annotations

import pytest

from devkit.sim.run import Options, run_seed

# seed → what it found before the fix (the commit that fixed it names the seed)
FOUND = {
    3: "a call that outlasted its lease, after a restart (executor._lease_covers)",
    4: "an edit while replicated time lagged placed an occurrence that ran again (State.occurrence_ran)",
    5: "a deposed leader fired a fire it had released (Fence.leading)",
    19: "a pause took back a due fire that no executor held (occurrences._miss)",
}


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_a_seed_that_once_failed_passes(seed: int) -> None:
    result = run_seed(seed, Options())
    assert result.ok, f"{result.violation} (was: {FOUND[seed]}; replay: make sim SEED={seed})"
    assert result.calls > 1_000 and result.simulated_s >= 600  # ten simulated minutes of real work


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = (run_seed(7, Options(minutes=3, full_trace=True)) for _ in range(2))
    assert first.trace == second.trace and len(first.trace.splitlines()) > 1_000
