"""Commands: the only way anything changes the replicated state.

Each command is a small frozen record. On the wire (the Raft log) it is msgpack
`[FORMAT_VERSION, type_tag, {field: value}]`. Every command carries `now_ms`,
the proposing node's clock; the state machine never reads a clock of its own.
A command proposed through the API also carries its `actor` (key id, team,
role, remote address): apply scopes it to the actor's team and audits it.
A log entry that cannot be decoded is a fatal error (see raft.py): skipping it
would let nodes diverge.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack

FORMAT_VERSION = 1


class UndecodableCommand(ValueError):
    """Bytes that are not a command this version understands."""


@dataclass(frozen=True)
class Command:
    TAG: ClassVar[int] = 0
    now_ms: int
    # {"key", "team", "role", "remote"} of the API caller; empty for the cluster's own commands.
    actor: dict[str, Any] = field(default_factory=dict, kw_only=True)


@dataclass(frozen=True)
class RegisterNode(Command):
    """A node announces its id and addresses, so followers can be named and reached."""

    TAG: ClassVar[int] = 1
    node_id: str
    raft_addr: str
    http_addr: str


@dataclass(frozen=True)
class CreateJob(Command):
    """Create a job. A repeated non-empty `idempotency_key` returns the first job instead."""

    TAG: ClassVar[int] = 2
    spec: dict[str, Any]
    idempotency_key: str = ""
    team: str = ""  # the job's team; "" is the default team


@dataclass(frozen=True)
class ReplaceJob(Command):
    """Replace a job's definition. `if_version` 0 means unconditional."""

    TAG: ClassVar[int] = 3
    spec: dict[str, Any]
    if_version: int = 0


@dataclass(frozen=True)
class DeleteJob(Command):
    TAG: ClassVar[int] = 4
    job_id: str
    if_version: int = 0
    force: bool = False  # delete although other jobs depend on it (they lose the dependency)


@dataclass(frozen=True)
class AssignFires(Command):
    """The leader hands fires to executors, and carries the leader's clock.

    items: [job_id, scheduled_ms, node_id], the next occurrence of a job from its slot;
    reassign: [fire_id, attempt, node_id, holder], an existing fire (pending, or held by an
    executor that died or whose lease ended) moved to a node, if `holder` (the node the
    leader saw holding it, "" for pending) still holds it (older logs: no holder);
    release: [fire_id, attempt, node_id], a fire that `leader_id` held as a follower and
    never started, moved to a node as the same attempt (as DrainNode releases); or
    [fire_id, attempt, node_id, holder], a fire of a silent follower `holder` that the
    leader knows it cannot have started (due after its fence closed).

    Only this command advances replicated time (StateMachine.apply): it is proposed by the
    leader's dispatcher alone, with the leader's clock. With nothing in it, it is the
    leader's clock tick.
    """

    TAG: ClassVar[int] = 5
    items: list[list[Any]]
    reassign: list[list[Any]] = field(default_factory=list)
    release: list[list[Any]] = field(default_factory=list)
    leader_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a fire did, as seen by its executor."""

    fire_id: str
    attempt: int
    status: str  # succeeded | failed | timed_out
    http_status: int  # 0 when no HTTP answer came
    started_ms: int
    finished_ms: int
    error: str = ""
    retry_after_ms: int = 0  # the receiver's Retry-After, when it sent one
    bytes_sent: int = 0  # request body size, for the team's usage
    # The answer's run report (schedb.report): items_processed/_succeeded/_failed, message.
    report: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_list(self) -> list[Any]:
        """The row a CompleteFires carries. Without a report it stays the 9-element row of
        earlier versions (outcome_from_list takes 8, 9 or 10 elements)."""
        row = [self.fire_id, self.attempt, self.status, self.http_status,
               self.started_ms, self.finished_ms, self.error, self.retry_after_ms, self.bytes_sent]
        return [*row, self.report] if self.report else row


@dataclass(frozen=True)
class CompleteFires(Command):
    """An executor reports outcomes; `outcomes` holds Outcome.to_list() rows."""

    TAG: ClassVar[int] = 6
    node_id: str
    outcomes: list[list[Any]]


@dataclass(frozen=True)
class TriggerJob(Command):
    """Fire a job now, outside its schedule (a pending fire with its own id)."""

    TAG: ClassVar[int] = 7
    job_id: str
    correlation_id: str = ""  # the API request's, carried into the webhook
    params: dict[str, Any] = field(default_factory=dict)  # sent with the webhook
    force: bool = False  # run although a fire of the job is due or running


@dataclass(frozen=True)
class ReplayDeadLetter(Command):
    """Take a fire out of the dead-letter queue and deliver it again, same fire id."""

    TAG: ClassVar[int] = 8
    fire_id: str
    correlation_id: str = ""


@dataclass(frozen=True)
class DropDeadLetter(Command):
    TAG: ClassVar[int] = 9
    fire_id: str


@dataclass(frozen=True)
class BackfillJob(Command):
    """Fire the job's occurrences in [start_ms, end_ms] (bounded), each with its own fire id."""

    TAG: ClassVar[int] = 10
    job_id: str
    start_ms: int
    end_ms: int
    correlation_id: str = ""


@dataclass(frozen=True)
class DrainNode(Command):
    """A node shutting down: give it no new fires, and hand back the ones it has not
    started ([fire_id, attempt] rows) for the dispatcher to move. RegisterNode undoes it."""

    TAG: ClassVar[int] = 11
    node_id: str
    release: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CreateJobs(Command):
    """Create many jobs in one log entry (bulk loading); each spec succeeds or fails on its own."""

    TAG: ClassVar[int] = 12
    specs: list[dict[str, Any]] = field(default_factory=list)
    team: str = ""


@dataclass(frozen=True)
class CreateApiKey(Command):
    """A new API key; only the SHA-256 of its token is stored (the token is shown once)."""

    TAG: ClassVar[int] = 13
    key_id: str
    key_hash: str
    team: str
    role: str
    name: str = ""


@dataclass(frozen=True)
class RevokeApiKey(Command):
    TAG: ClassVar[int] = 14
    key_id: str


@dataclass(frozen=True)
class SetQuotas(Command):
    """Set a team's quotas at runtime; a null value goes back to the config's default."""

    TAG: ClassVar[int] = 15
    team: str
    quotas: dict[str, Any]


@dataclass(frozen=True)
class SetDefaultQuotas(Command):
    """Every team's quotas unless set for the team: the leader proposes its config's [quotas]."""

    TAG: ClassVar[int] = 18
    quotas: dict[str, Any]


@dataclass(frozen=True)
class SetLimits(Command):
    """The state's configurable bounds (schedb.fsm.limits.CONFIGURABLE): the leader proposes its
    config's [scheduler] values, so every node applies the same ones."""

    TAG: ClassVar[int] = 20
    limits: dict[str, Any]


@dataclass(frozen=True)
class PutSecret(Command):
    """Create or replace a team's secret, already sealed (AES-GCM) by the proposing node."""

    TAG: ClassVar[int] = 16
    team: str
    name: str
    sealed: bytes


@dataclass(frozen=True)
class DeleteSecret(Command):
    TAG: ClassVar[int] = 17
    team: str
    name: str


@dataclass(frozen=True)
class RegisterJobs(Command):
    """A service declares its jobs (registry.py); `team` is the jobs' team."""

    TAG: ClassVar[int] = 19
    service: str
    jobs: list[dict[str, Any]]
    team: str = ""


COMMAND_TYPES: dict[int, type[Command]] = {
    cls.TAG: cls for cls in (RegisterNode, CreateJob, ReplaceJob, DeleteJob, AssignFires, CompleteFires,
                             TriggerJob, ReplayDeadLetter, DropDeadLetter, BackfillJob, DrainNode, CreateJobs,
                             CreateApiKey, RevokeApiKey, SetQuotas, PutSecret, DeleteSecret, SetDefaultQuotas,
                             RegisterJobs, SetLimits)
}


def encode(command: Command) -> bytes:
    assert command.TAG in COMMAND_TYPES, f"unregistered command {type(command).__name__}"
    # A shallow field dict: asdict() would deep-copy every row of a large batch first.
    payload = {f.name: getattr(command, f.name) for f in fields(command)}
    return msgpack.packb([FORMAT_VERSION, command.TAG, payload], use_bin_type=True)


def decode(data: bytes) -> Command:
    try:
        version, tag, payload = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise UndecodableCommand(f"not a command: {exc}") from exc
    if version != FORMAT_VERSION or tag not in COMMAND_TYPES or not isinstance(payload, dict):
        raise UndecodableCommand(f"unknown command version={version!r} tag={tag!r}")
    cls = COMMAND_TYPES[tag]
    names = {f.name for f in fields(cls)}
    if set(payload) - names:
        raise UndecodableCommand(f"{cls.__name__} has unknown fields {sorted(set(payload) - names)}")
    try:
        return cls(**payload)
    except TypeError as exc:
        raise UndecodableCommand(f"{cls.__name__}: {exc}") from exc


def outcome_from_list(row: list[Any]) -> Outcome:
    return Outcome(*row)


def jobs_touched(command: Command) -> tuple[str, ...] | None:
    """The ids of the jobs a command may change; () for none; None: it cannot tell (its fields
    are odd: apply refuses it). `service:<name>` stands for every job of a registering service."""
    if isinstance(command, CreateJob | ReplaceJob):
        return (str(command.spec["id"]),) if isinstance(command.spec, dict) and "id" in command.spec else None
    if isinstance(command, DeleteJob):
        return (str(command.job_id),)
    if isinstance(command, CreateJobs):
        if not isinstance(command.specs, list):
            return None
        return tuple(str(s["id"]) for s in command.specs if isinstance(s, dict) and "id" in s)
    if isinstance(command, RegisterJobs):
        return ("service:" + str(command.service),)
    return ()
