"""The catch-up budget, watched: no apply does unbounded catch-up work (issue 16, defect 6).

A job that fell behind (an outage) catches up inside apply, on every node (schedb.fsm.misfire);
one command may start a job's catch-up only while the work its earlier catch-ups did is below
COMMAND_WORK_MAX (State.may_catch_up), so that no single apply blocks a node for long. The
watch counts, for each apply, the work of the catch-ups it runs (their own deterministic
metering, CatchUp.work) and fails the run when a catch-up starts past the budget.

The budget (~40 ms of work) is far above what a simulated outage (seconds) makes late, so most
seeds would never reach it: one seed in three runs with a small budget drawn from
SMALL_BUDGETS, from an rng of its own (the other seeds run as before). Those seeds exercise
the deferral (the dispatcher sends a deferred job again) as well as the bound.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devkit.sim.checks import Violation
from schedb.fsm import core, misfire
from schedb.fsm.machine import StateMachine

SMALL_BUDGET_EVERY = 3
SMALL_BUDGETS = (300, 1_000, 3_000)


def draw_budget(seed: int) -> int:
    """The per-command catch-up budget of this seed's run."""
    rng = random.Random(f"catch-up-budget:{seed}")
    return rng.choice(SMALL_BUDGETS) if rng.randrange(SMALL_BUDGET_EVERY) == 0 else misfire.COMMAND_WORK_MAX


class CatchUpWatch:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.spent = 0  # the work of the catch-ups of the apply in progress

    @contextmanager
    def installed(self) -> Iterator[None]:
        """For one run: the budget in force (State.may_catch_up reads it), every apply watched."""
        catch_up, apply, budget = misfire.catch_up, StateMachine.apply, core.COMMAND_WORK_MAX

        def watched_catch_up(*args: Any, **kwargs: Any) -> misfire.CatchUp:
            if self.spent >= self.budget:
                raise Violation("catch_up_bounded", f"a catch-up started after this apply's catch-ups did "
                                f"{self.spent} of work (the budget: {self.budget})")
            decision = catch_up(*args, **kwargs)
            self.spent += decision.work
            return decision

        def watched_apply(machine: StateMachine, command: Any) -> Any:
            self.spent = 0
            return apply(machine, command)

        misfire.catch_up = watched_catch_up  # type: ignore[assignment]
        StateMachine.apply = watched_apply  # type: ignore[method-assign]
        core.COMMAND_WORK_MAX = self.budget  # type: ignore[misc]
        try:
            yield
        finally:
            misfire.catch_up = catch_up  # type: ignore[assignment]
            StateMachine.apply = apply  # type: ignore[method-assign]
            core.COMMAND_WORK_MAX = budget  # type: ignore[misc]
