"""The executor's fires: one table of the attempts this node holds, each in one phase.

    transition  from                     to
    arm         -                        waiting   the state gives this node an attempt
    hold        waiting                  held      due, but the executor must not start it now
    orphan      waiting                  orphaned  due, but it may have started before a restart
    start       waiting, held            running   due (or released) and nothing holds it
    report      running                  reported  an outcome (delivered, skipped, cancelled)
    finish      running                  -         its task ended with nothing to report
    committed   reported                 -         its outcome is in the log
    drop        waiting, held, orphaned  -         the state took it away (or a drain ends)

- waiting: a timer for its due instant (a place in the DueTimers group of that instant);
- held: due, but held back (replay not caught up, leader, no quorum, fenced, clock,
  draining); started when the reason goes;
- orphaned: an at-most-once fire due before this node (re)started: its previous run
  may have called it, so it is never started here; left to its lease (a phase of its
  own, not a flag on held: it is never released, counted as scheduled nor handed back);
- running: its task decides (fire or skip) and delivers;
- reported: its outcome waits to commit (CompleteFires).

waiting, held and orphaned are *pending*: nothing was started, and the state may take
them away (`drop`). A fire id has at most one pending attempt; a running or reported
attempt is never taken away (its last-moment checks and the state's at-most-one
outcome per attempt take care of a move). Every phase change is a method of
`LocalFires`, which checks the phase it leaves, so a key is in exactly one phase,
running ⇒ a task and reported ⇒ an outcome hold by construction (`check` verifies).

`reconcile` is the pure half of following the state: from the phases of the local
attempts and the state's changes to this node's fires, what to drop and what to arm.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from schedb.commands import Outcome
from schedb.timers import DueTimers, FireKey

Fire = dict[str, Any]


class Phase(enum.Enum):
    WAITING = "waiting"
    HELD = "held"
    ORPHANED = "orphaned"
    RUNNING = "running"
    REPORTED = "reported"


PENDING = frozenset({Phase.WAITING, Phase.HELD, Phase.ORPHANED})  # not started: the state may take them away


class PhaseError(AssertionError):
    """A transition from a phase that does not allow it: a bug in the executor (raised under -O too)."""


@dataclass(eq=False)
class LocalFire:
    key: FireKey  # (fire_id, attempt)
    fire: Fire  # the state's copy of the fire when this attempt was armed
    phase: Phase = Phase.WAITING
    task: asyncio.Task[None] | None = None  # running: its decision and delivery
    outcome: Outcome | None = None  # reported: waits to commit
    offered: bool = False  # waiting or held: handed back by a drain (DrainNode); not offered again


class TimerGroup(Protocol):
    """What the table needs of DueTimers (a fake in unit tests)."""

    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def add(self, key: FireKey, fire: Fire) -> None: ...
    def cancel(self, key: FireKey) -> None: ...
    def cancel_all(self) -> None: ...


class LocalFires:
    def __init__(self, on_due: Callable[[LocalFire], None],
                 timers: Callable[[Callable[[FireKey, Fire], None]], TimerGroup] = DueTimers) -> None:
        """on_due(local) runs when a waiting attempt's instant comes; it must hold, orphan or start it."""
        self._on_due = on_due
        self._timers = timers(self._fired)
        self._by_id: dict[str, dict[int, LocalFire]] = {}  # fire id → attempt → its record
        self._by_phase: dict[Phase, dict[FireKey, LocalFire]] = {phase: {} for phase in Phase}  # in order of entry

    # -- reads ------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(records) for records in self._by_phase.values())

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def get(self, key: FireKey) -> LocalFire | None:
        return self._by_id.get(key[0], {}).get(key[1])

    def phase_of(self, key: FireKey) -> Phase | None:
        local = self.get(key)
        return local.phase if local is not None else None

    def count(self, *phases: Phase) -> int:
        return sum(len(self._by_phase[phase]) for phase in phases)

    def in_phase(self, phase: Phase) -> list[LocalFire]:
        """A copy, oldest entry into the phase first."""
        return list(self._by_phase[phase].values())

    def running_of(self, fire_id: str) -> list[FireKey]:
        return [local.key for local in self._by_id.get(fire_id, {}).values() if local.phase is Phase.RUNNING]

    def started_before(self, key: FireKey) -> list[LocalFire]:
        """This node's earlier attempts of the same fire that started here (running or reported)."""
        return [local for attempt, local in self._by_id.get(key[0], {}).items()
                if attempt < key[1] and local.phase in (Phase.RUNNING, Phase.REPORTED)]

    def phases(self, fire_ids: Iterable[str] | None = None) -> dict[FireKey, Phase]:
        """The phases of the attempts of these fires (of all fires: None), for `reconcile`."""
        ids = self._by_id if fire_ids is None else fire_ids
        return {local.key: local.phase for fire_id in ids for local in self._by_id.get(fire_id, {}).values()}

    def outcomes(self, limit: int) -> list[tuple[FireKey, Outcome]]:
        """Up to `limit` outcomes waiting to commit, the oldest first."""
        out = []
        for local in self._by_phase[Phase.REPORTED].values():
            if len(out) >= limit:
                break
            assert local.outcome is not None
            out.append((local.key, local.outcome))
        return out

    def to_offer(self, maybe_started: Callable[[Fire], bool]) -> list[FireKey]:
        """Waiting and held attempts not handed back yet, but those a previous run of this node
        may have started (maybe_started): handed back, they would run again as the same attempt."""
        return [local.key for phase in (Phase.WAITING, Phase.HELD) for local in self._by_phase[phase].values()
                if not local.offered and not maybe_started(local.fire)]

    # -- transitions --------------------------------------------------------------

    def arm(self, key: FireKey, fire: Fire) -> None:
        """A new attempt for this node: waiting for its instant."""
        _require(self.get(key) is None, f"{key} is already in the table")
        _require(self._pending_of(key[0]) is None, f"{key[0]} already has a pending attempt")
        local = LocalFire(key, fire)
        self._by_id.setdefault(key[0], {})[key[1]] = local
        self._by_phase[Phase.WAITING][key] = local
        self._timers.add(key, fire)

    def hold(self, key: FireKey) -> None:
        self._move(key, (Phase.WAITING,), Phase.HELD)

    def wait_again(self, key: FireKey) -> None:
        """A held attempt that is not due any more by this node's clock (it stepped back while
        the attempt was held): waiting for its instant again."""
        local = self._move(key, (Phase.HELD,), Phase.WAITING)
        self._timers.add(key, local.fire)

    def orphan(self, key: FireKey) -> None:
        self._move(key, (Phase.WAITING,), Phase.ORPHANED)

    def start(self, key: FireKey, task: asyncio.Task[None]) -> None:
        self._move(key, (Phase.WAITING, Phase.HELD), Phase.RUNNING).task = task

    def report(self, key: FireKey, outcome: Outcome) -> None:
        local = self._move(key, (Phase.RUNNING,), Phase.REPORTED)
        local.task, local.outcome = None, outcome

    def finish(self, key: FireKey) -> None:
        """The attempt's task ended: gone if it had nothing to report (not ours, job deleted)."""
        local = self._require_in(key, (Phase.RUNNING, Phase.REPORTED))
        if local.phase is Phase.RUNNING:
            self._remove(local)

    def committed(self, keys: Iterable[FireKey]) -> None:
        """Their outcomes are in the log: forgotten."""
        for key in keys:
            local = self.get(key)
            if local is not None:
                self._remove(self._require_in(key, (Phase.REPORTED,)))

    def drop(self, key: FireKey) -> None:
        """A pending attempt the state took away (or the executor stops waiting for)."""
        local = self._require_in(key, tuple(PENDING))
        if local.phase is Phase.WAITING:
            self._timers.cancel(key)
        self._remove(local)

    def drop_waiting(self) -> None:
        self._timers.cancel_all()
        for local in self.in_phase(Phase.WAITING):
            self._remove(local)

    def offer(self, keys: Iterable[FireKey]) -> None:
        """Handed back by a drain; those the state already took away are gone."""
        for key in keys:
            local = self.get(key)
            if local is not None and local.phase in (Phase.WAITING, Phase.HELD):
                local.offered = True

    # -- invariants -------------------------------------------------------------

    def check(self) -> None:
        """Every invariant of the table (unit tests run it after each step)."""
        by_id = [local for attempts in self._by_id.values() for local in attempts.values()]
        _require(len(by_id) == len(self), "the id index and the phase index differ")
        for phase, records in self._by_phase.items():
            for key, local in records.items():
                _require(local.key == key and local.phase is phase and self.get(key) is local, f"{key} misfiled")
                _require((local.task is not None) == (phase is Phase.RUNNING), f"{key}: a task iff running")
                _require((local.outcome is not None) == (phase is Phase.REPORTED), f"{key}: an outcome iff reported")
                _require((key in self._timers) == (phase is Phase.WAITING), f"{key}: a timer iff waiting")
        _require(len(self._timers) == self.count(Phase.WAITING), "a timer for no waiting attempt")
        for fire_id, attempts in self._by_id.items():
            _require(bool(attempts), f"{fire_id}: an empty entry")
            _require(sum(local.phase in PENDING for local in attempts.values()) <= 1, f"{fire_id}: two pending")

    # -- internals --------------------------------------------------------------

    def _fired(self, key: FireKey, fire: Fire) -> None:
        local = self._require_in(key, (Phase.WAITING,))
        self._on_due(local)
        _require(local.phase is not Phase.WAITING, f"{key}: due, but neither held, orphaned nor started")

    def _pending_of(self, fire_id: str) -> LocalFire | None:
        return next((lf for lf in self._by_id.get(fire_id, {}).values() if lf.phase in PENDING), None)

    def _require_in(self, key: FireKey, phases: tuple[Phase, ...]) -> LocalFire:
        local = self.get(key)
        if local is None or local.phase not in phases:
            now = local.phase.value if local is not None else "not in the table"
            raise PhaseError(f"{key} is {now}, not {'/'.join(phase.value for phase in phases)}")
        return local

    def _move(self, key: FireKey, sources: tuple[Phase, ...], target: Phase) -> LocalFire:
        local = self._require_in(key, sources)
        del self._by_phase[local.phase][key]
        self._by_phase[target][key] = local
        local.phase = target
        return local

    def _remove(self, local: LocalFire) -> None:
        del self._by_phase[local.phase][local.key]
        attempts = self._by_id[local.key[0]]
        del attempts[local.key[1]]
        if not attempts:
            del self._by_id[local.key[0]]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PhaseError(message)


# -- following the state: pure ------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    drop: tuple[FireKey, ...] = ()  # pending attempts the state no longer gives this node
    arm: tuple[tuple[FireKey, Fire], ...] = ()  # attempts it gives this node that the table lacks


def reconcile(local: Mapping[FireKey, Phase], full: bool, changed: Mapping[str, Fire | None]) -> Plan:
    """What to drop and arm so the table follows the state.

    local: the phases of the table's attempts of (at least) the changed fires, of all of
    them when `full`; full, changed: from `State.fire_changes` (full: the complete set
    of this node's fires, so a pending attempt of a fire not listed is no longer ours);
    changed maps a fire id to the state's fire if this node holds it, else None.

    A pending attempt goes when the state moves or ends its fire or starts a new
    attempt; running and reported attempts stay (they are never taken away). An
    attempt the state gives this node is armed unless the table has it in any phase:
    pending, started, or orphaned (which must never start here)."""
    pending = {key[0]: key for key, phase in local.items() if phase in PENDING}
    drop: list[FireKey] = []
    arm: list[tuple[FireKey, Fire]] = []
    for fire_id, fire in changed.items():
        current = (fire_id, fire["attempt"]) if fire is not None else None
        key = pending.get(fire_id)
        if key is not None and key != current:
            drop.append(key)
        if current is not None and fire is not None and current not in local:
            arm.append((current, fire))
    if full:
        drop += [key for fire_id, key in pending.items() if fire_id not in changed]
    return Plan(tuple(drop), tuple(arm))
