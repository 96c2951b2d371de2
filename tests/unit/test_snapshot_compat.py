"""A snapshot pickled before schedb.fsm (commit 45f6fa4) loads, and goes on as the old code did.

The fixture (tests/unit/fixtures/make_snapshot_45f6fa4.py made it, with that commit's code)
names schedb.state.State, schedb.fires.FireBook, schedb.slots.SlotIndex and
schedb.limits.StateLimits, modules that no longer exist: schedb.fsm.snapshot_compat maps them.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schedb.commands import AssignFires, CompleteFires, CreateJob, DeleteJob, Outcome, ReplaceJob
from schedb.fsm import snapshot_compat
from schedb.fsm.core import SNAPSHOT_VERSION
from schedb.fsm.fires import FireBook
from schedb.fsm.invariants import violations
from schedb.fsm.limits import StateLimits
from schedb.fsm.machine import StateMachine
from schedb.fsm.slots import SlotIndex
from schedb.fsm.upgrade import SnapshotTooNew
from schedb.jobspec import validate_job
from tests.unit.test_state import T0, cluster_state, spec

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parents[2]
ALICE = {"key": "k-alice", "team": "a", "role": "operator", "remote": "127.0.0.1"}


def old_snapshot() -> StateMachine:
    snapshot_compat.register()
    state = pickle.loads((FIXTURES / "snapshot_45f6fa4.pickle").read_bytes())["state"]
    assert isinstance(state, StateMachine)
    return state


def _outcome(fire_id: str, attempt: int, status: str, at: int) -> list[Any]:
    return Outcome(fire_id, attempt, status, 200 if status == "succeeded" else 500, at, at + 5).to_list()


def follow_up(state: StateMachine) -> list[Any]:
    """The same commands as make_snapshot_45f6fa4.follow_up."""
    left = next(f["fire_id"] for f in state.book.fires.values() if f["job_id"] == "left")
    resumed = {**state.jobs["later"]["spec"], "paused": False}
    tick = validate_job({"id": "tick", "schedule": "@every 2s", "webhook": {"url": "http://127.0.0.1/h"}})
    commands = [
        AssignFires(T0 + 40_000, [["tick", state.jobs["tick"]["next_fire_ms"], "node3"]],
                    reassign=[[left, 1, "node3"]], leader_id="node1"),
        CompleteFires(T0 + 40_100, "node3", [_outcome(left, 1, "succeeded", T0 + 40_000)]),
        ReplaceJob(T0 + 40_200, resumed),
        CreateJob(T0 + 40_300, tick, idempotency_key="k1", team="a", actor=ALICE),
        DeleteJob(T0 + 40_400, "join"),
    ]
    # An AssignFires result names since the fires it gave each node (`given`, for the leader's
    # admission control): not in what the old code answered, and not state.
    return [{k: v for k, v in state.apply(command).items() if k != "given"} for command in commands]


def test_a_snapshot_of_45f6fa4_loads_with_the_same_canonical_bytes() -> None:
    state = old_snapshot()
    assert state.canonical_bytes() == (FIXTURES / "snapshot_45f6fa4.canonical").read_bytes()
    assert state.snapshot_version == SNAPSHOT_VERSION
    assert (type(state.book), type(state.slots), type(state.limits)) == (FireBook, SlotIndex, StateLimits)
    assert set(vars(state)) == set(vars(StateMachine()))  # every declared field, and no other
    assert violations(state) == []


def test_a_loaded_snapshot_goes_on_as_the_old_code_did() -> None:
    state = old_snapshot()
    results = follow_up(state)
    assert repr(results) + "\n" == (FIXTURES / "snapshot_45f6fa4.results").read_text()
    assert state.canonical_bytes() == (FIXTURES / "snapshot_45f6fa4.after").read_bytes()
    assert violations(state) == []


def test_a_new_snapshot_round_trips_and_names_the_new_paths() -> None:
    state = cluster_state()
    state.apply(CreateJob(T0, spec()))
    data = pickle.dumps({"state": state}, protocol=2)
    assert b"schedb.fsm.machine" in data and b"schedb.state" not in data
    restored = pickle.loads(data)["state"]
    assert restored.canonical_bytes() == state.canonical_bytes() and restored.snapshot_version == SNAPSHOT_VERSION


def test_a_snapshot_of_a_newer_version_is_refused() -> None:
    state = cluster_state()
    state.snapshot_version = SNAPSHOT_VERSION + 1
    with pytest.raises(SnapshotTooNew):
        pickle.loads(pickle.dumps(state))


def test_the_raft_adapter_registers_the_old_paths_and_nothing_else_provides_them() -> None:
    """In a fresh process: the old pickle does not load until a StateHolder exists (pysyncobj
    loads snapshots only after), and then it does."""
    script = f"""
import pickle, sys
# A development install of another checkout (an editable install's finder) would provide the
# old modules from there: only this tree counts.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
data = open({str(FIXTURES / 'snapshot_45f6fa4.pickle')!r}, 'rb').read()
try:
    pickle.loads(data)
except ModuleNotFoundError as exc:
    print("without:", exc.name)
else:
    print("without: loaded")
from schedb.fsm.machine import StateMachine
from schedb.applier import StateHolder
StateHolder(StateMachine(), lambda command: None)
print("with:", type(pickle.loads(data)["state"]).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:2] == ["without: schedb.state", "with: StateMachine"], done.stderr
