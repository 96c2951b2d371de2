"""The state machine: its one entry point (`apply`), the handler of each command, and the
canonical bytes of the state.

Rules (the contract with schedb.raft, as in hashicorp/raft's FSM):
- `apply(command)` is deterministic: no clock, no randomness, no I/O, no logging.
  Time enters only as `command.now_ms`. Replicated time (`now_ms`) is the
  leader's: only its AssignFires advance it, never backwards; another node's
  clock is an input that cannot move it (see schedb.fsm.replicated_time).
- A bad command is rejected with the same result on every node and changes
  nothing. Results are plain dicts: {"ok": True, ...} or {"error": code, ...}.
- Everything is bounded: history per job and in all, recent executions, dead
  letters, idempotency keys, runs, fires per command.

The fields are declared in schedb.fsm.core; the handlers are the modules below this one
(schedb.fsm's docstring lists them). This module only dispatches, audits and renders.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack

from schedb.commands import (
    AssignFires,
    BackfillJob,
    Command,
    CompleteFires,
    CreateApiKey,
    CreateJob,
    CreateJobs,
    DeleteJob,
    DeleteSecret,
    DrainNode,
    DropDeadLetter,
    PutSecret,
    RegisterJobs,
    RegisterNode,
    ReplaceJob,
    ReplayDeadLetter,
    RevokeApiKey,
    SetDefaultQuotas,
    SetLimits,
    SetQuotas,
    TriggerJob,
)
from schedb.fsm import assign, complete, dead_letters, jobs, nodes, registry, settings, tenancy, upgrade
from schedb.fsm.core import State
from schedb.fsm.fires import FireBook
from schedb.fsm.model import Result
from schedb.fsm.replicated_time import command_time
from schedb.fsm.slots import SlotIndex

HANDLERS: dict[type[Command], Callable[[State, Any], Result]] = {
    RegisterNode: nodes.register_node,
    DrainNode: nodes.drain_node,
    CreateJob: jobs.create_job,
    CreateJobs: jobs.create_jobs,
    ReplaceJob: jobs.replace_job,
    DeleteJob: jobs.delete_job,
    TriggerJob: jobs.trigger_job,
    AssignFires: assign.assign_fires,
    CompleteFires: complete.complete_fires,
    ReplayDeadLetter: dead_letters.replay_dead_letter,
    DropDeadLetter: dead_letters.drop_dead_letter,
    BackfillJob: jobs.backfill_job,
    CreateApiKey: tenancy.create_api_key,
    RevokeApiKey: tenancy.revoke_api_key,
    SetQuotas: tenancy.set_quotas,
    SetDefaultQuotas: tenancy.set_default_quotas,
    SetLimits: settings.set_limits,
    RegisterJobs: registry.register_jobs,
    PutSecret: tenancy.put_secret,
    DeleteSecret: tenancy.delete_secret,
}

# The canonical bytes: these fields, in this order (a tuple is rendered as a list of its
# fields). The order is that of the bytes before schedb.fsm: determinism checks compare them.
CANONICAL_FIELDS: tuple[str | tuple[str, ...], ...] = (
    "now_ms", "leader_clock", "applied", "jobs", "slots", "book", "history", "recent", "dead_letters",
    "idempotency", "nodes", "counters", "api_keys", "quotas", "secrets", "usage", "fire_windows", "team_jobs",
    "audit", "default_quotas", "dependents", "runs",
    ("history_order", "history_next", "history_written", "history_total"), "catch_up_work",
)
# The declared fields the canonical bytes leave out, and why.
NOT_CANONICAL = {
    "snapshot_version": "the shape of the pickle, not the state",
    "limits": "replicated (SetLimits), and seen in what they bound",
    "key_hashes": "derived from api_keys",
    "finished_runs": "derived from runs",
    "audit_seq": "the last audit record's seq while one is kept",
}


class StateMachine(State):
    """The State with its one entry point. It adds no field: schedb.fsm.core declares them all."""

    def __setstate__(self, data: dict[str, Any]) -> None:
        """A snapshot loads through schedb.fsm.upgrade (an older one lacks newer fields)."""
        upgrade.restore(self, data)

    def apply(self, command: Command) -> Result:
        self.applied += 1
        if not isinstance(command.now_ms, int) or isinstance(command.now_ms, bool) or \
                not isinstance(command.actor, dict):
            self.counters["commands_rejected"] += 1
            return {"error": "invalid", "detail": "now_ms must be an integer and actor an object"}
        if isinstance(command, AssignFires) and command.leader_id:
            self.leader_clock = True
        result = self._apply_at(command, command_time(command, self.now_ms, self.leader_clock))
        if "error" in result:
            self.counters["commands_rejected"] += 1
            self.counters["quota_refusals"] += result["error"] == "quota"
        if command.actor:
            tenancy.audit(self, command, result)
        return result

    def _apply_at(self, command: Command, now_ms: int) -> Result:
        """Run the command's handler at `now_ms`. Only the leader's AssignFires moves replicated
        time for good; any other command sees its own time only while it is applied."""
        if isinstance(command, AssignFires) or not self.leader_clock:
            self.now_ms = now_ms
            return HANDLERS[type(command)](self, command)
        replicated_ms, self.now_ms = self.now_ms, now_ms
        try:
            return HANDLERS[type(command)](self, command)
        finally:
            self.now_ms = replicated_ms

    def canonical_bytes(self) -> bytes:
        """A byte-exact rendering of the whole state, for determinism checks."""
        values = [[getattr(self, f) for f in name] if isinstance(name, tuple) else getattr(self, name)
                  for name in CANONICAL_FIELDS]
        return msgpack.packb(values, use_bin_type=True, default=_canonical)


def _canonical(value: Any) -> Any:
    """What msgpack cannot pack itself: deques as lists, the book and the slots as their own
    canonical lists."""
    if isinstance(value, deque):
        return list(value)
    if isinstance(value, FireBook | SlotIndex):
        return value.to_canonical()
    raise TypeError(f"the state holds a {type(value).__name__}, which has no canonical form")


def _check_declared() -> None:
    """Every field State declares is rendered, or left out with a reason (checked on import)."""
    rendered = [f for name in CANONICAL_FIELDS for f in (name if isinstance(name, tuple) else (name,))]
    declared = set(State.__annotations__)
    if len(rendered) != len(set(rendered)) or set(rendered) | set(NOT_CANONICAL) != declared or \
            set(rendered) & set(NOT_CANONICAL):
        raise RuntimeError("CANONICAL_FIELDS and NOT_CANONICAL must split State's declared fields")


_check_declared()
