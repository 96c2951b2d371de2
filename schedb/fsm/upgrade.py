"""Loading a snapshot: an older State is brought up to the fields of this version.

pysyncobj pickles the State (schedb.raft's StateHolder) and unpickles it into
StateMachine.__setstate__, which hands the pickled fields here. Snapshot version 1 is every
version before schedb.fsm (no `snapshot_version` field); those grew fields one feature at a
time, so each step below fills in what one feature added when it is missing, in the order the
features came (the counters a step adds go at the end of the dict, as they always did: the
canonical bytes of an upgraded state are those the old code produced). A snapshot of a newer
version than this code knows is refused rather than misread. The old class paths such a
pickle names are resolved by schedb.fsm.snapshot_compat.
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields
from typing import Any

from schedb.fsm import history
from schedb.fsm.core import SNAPSHOT_VERSION, State
from schedb.fsm.limits import BUILTIN_QUOTAS, StateLimits
from schedb.fsm.model import TriggerRule
from schedb.fsm.tenancy import DEFAULT_TEAM


class SnapshotTooNew(ValueError):
    """The snapshot was written by a newer version of schedb."""


def restore(state: State, data: dict[str, Any]) -> None:
    version = data.get("snapshot_version", 1)
    if not isinstance(version, int) or version > SNAPSHOT_VERSION:
        raise SnapshotTooNew(f"snapshot version {version!r}; this schedb reads up to {SNAPSHOT_VERSION}")
    state.__dict__.update(data)
    # Limits pickled by an older version lack the newer bounds: those get their defaults (so a
    # bound added to StateLimits with a default needs no new snapshot version).
    known = {f.name for f in fields(StateLimits)}
    state.limits = StateLimits(**{k: v for k, v in vars(state.limits).items() if k in known})
    # The fire book's `ended` came without a new snapshot version: empty, it changes no canonical
    # bytes (FireBook.to_canonical).
    state.book.__dict__.setdefault("ended", {})
    if version < 2:
        _from_version_1(state)
    state.snapshot_version = SNAPSHOT_VERSION


def _from_version_1(state: State) -> None:
    state.__dict__.setdefault("leader_clock", False)
    _teams(state)
    _workflows(state)
    if not hasattr(state, "history_order"):  # before the cluster-wide history bound
        history.reindex(state)
    state.__dict__.setdefault("catch_up_work", [0, 0])
    state.counters.setdefault("catch_ups_deferred", 0)


def _teams(state: State) -> None:
    """Before teams: every job joins the default team."""
    if not hasattr(state, "api_keys"):
        state.api_keys, state.key_hashes, state.quotas = {}, {}, {}
        state.default_quotas = dict(BUILTIN_QUOTAS)
        state.secrets, state.usage, state.fire_windows, state.team_jobs = {}, {}, {}, {}
        state.audit = deque(maxlen=state.limits.audit_records)
        state.audit_seq = 0
        for job in state.jobs.values():
            job.setdefault("team", DEFAULT_TEAM)
            state.team_jobs[DEFAULT_TEAM] = state.team_jobs.get(DEFAULT_TEAM, 0) + 1
    if not hasattr(state, "default_quotas"):
        state.default_quotas = dict(BUILTIN_QUOTAS)
    state.counters.setdefault("fires_throttled", 0)
    state.counters.setdefault("quota_refusals", 0)


def _workflows(state: State) -> None:
    """Before workflows: no runs yet, and the jobs depend on nothing."""
    if not hasattr(state, "runs"):
        state.dependents, state.runs, state.finished_runs = {}, {}, {}
        for job in state.jobs.values():
            job["spec"].setdefault("depends_on", [])
            job["spec"].setdefault("trigger_rule", str(TriggerRule.ALL_SUCCEEDED))
        for counter in ("dependency_fires", "upstream_failed"):
            state.counters.setdefault(counter, 0)
    if not hasattr(state, "finished_runs"):
        state.finished_runs = {r: None for r, run in state.runs.items() if run["finished_ms"] is not None}
