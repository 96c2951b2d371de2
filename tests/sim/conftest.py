"""One clean ten-minute run of the state machine under the operator, shared by the sim tests."""

from __future__ import annotations

import pytest

from tests.sim.driver import SimRun, simulate

SEED = 1


@pytest.fixture(scope="session")
def clean_run() -> SimRun:
    return simulate(SEED)
