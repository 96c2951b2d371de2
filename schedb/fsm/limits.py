"""The state's bounds and the teams' default quotas, replicated through the log.

Limits shape what apply does (how much history a job keeps, when a fire is a
misfire, how many jobs fit in a second), so every node must apply the same
ones: a node that read them from its own config would create a job that
another refuses. The leader proposes its config's values (SetLimits) when
they differ from the state's; with configs that differ, the current leader's
win, as for the default quotas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class StateLimits:
    """Bounds of the state; must be equal on every node of a cluster."""

    history_per_job: int = 100
    recent_executions: int = 10_000
    assign_batch_max: int = 5_000
    bulk_create_max: int = 1_000
    complete_batch_max: int = 5_000
    # Occurrences later than this (cluster down, overload, paused) are misfires,
    # handled by the job's misfire policy (schedb.fsm.misfire); run_all catches up
    # occurrences within the window.
    misfire_grace_ms: int = 10_000
    catch_up_window_ms: int = 3_600_000
    missed_records_max: int = 100
    withdrawn_max: int = 10_000
    ended_max: int = 10_000  # ended fires kept for the late outcome of an earlier attempt (schedb.fsm.fires)
    dead_letters_max: int = 10_000
    idempotency_keys_max: int = 100_000
    idempotency_ttl_ms: int = 86_400_000
    # How long after an attempt is due (plus its timeout) its outcome may take to
    # commit before the leader hands the fire to another executor.
    lease_grace_ms: int = 15_000
    # Backpressure: a create or reschedule whose first fire lands in a second that
    # already holds this many jobs is refused (the API answers 429).
    slot_jobs_max: int = 20_000
    api_keys_max: int = 10_000
    runs_max: int = 10_000
    quota_teams_max: int = 10_000
    secrets_per_team_max: int = 1_000
    audit_records: int = 10_000
    # All jobs' history together (schedb.fsm.history): ~730 B a record in memory, so ~150 MB, while
    # each job keeps its newest few whatever the others do.
    history_total_max: int = 200_000
    history_min_per_job: int = 5


# name -> (lowest, highest) accepted value
CONFIGURABLE: dict[str, tuple[int, int]] = {
    "history_per_job": (1, 10_000),
    "recent_executions": (1, 1_000_000),
    "misfire_grace_ms": (0, 86_400_000),
    "catch_up_window_ms": (0, 31 * 86_400_000),
    "idempotency_ttl_ms": (1_000, 31 * 86_400_000),
    "slot_jobs_max": (1, 10_000_000),
}


def current(limits: StateLimits) -> dict[str, int]:
    """The configurable bounds, as SetLimits carries them."""
    return {name: getattr(limits, name) for name in CONFIGURABLE}


@dataclass(frozen=True)
class Quotas:
    """A team's limits. These defaults are every team's until the leader proposes its config's
    [quotas] (SetDefaultQuotas; schedb.config's QuotasSection is this with the config's docs):
    apply never reads a node's config."""

    max_jobs: int = 1_000_000
    fires_per_minute: int = 600_000
    concurrent_webhooks: int = 512
    # Per node. A node answers a few thousand requests a second: the default only stops a flood.
    api_rps: int = 10_000


QUOTA_NAMES = tuple(f.name for f in fields(Quotas))
BUILTIN_QUOTAS = asdict(Quotas())
