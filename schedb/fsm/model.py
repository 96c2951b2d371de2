"""What the replicated state holds: its records, and the names of their statuses.

The records are TypedDicts: the state stores plain dicts (snapshots are pickles of the
State, and `canonical_bytes` renders them with msgpack), and these types only describe
them, key for key. The enums name the strings those dicts hold; a StrEnum member compares
and hashes equal to its string. Store the plain string, never a member (`str(member)` or an
f-string gives it): a member in the state would change the snapshot's pickle
(schedb.fsm.invariants checks the state holds only plain values).

No `from __future__ import annotations` here: TypedDict reads NotRequired from evaluated
annotations (tests/unit/test_model.py checks the records against the state's dicts).
"""

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

Result = dict[str, Any]  # what apply returns: {"ok": True, ...} or {"error": code, "detail": ...}


class ExecutionStatus(StrEnum):
    """The status of an execution record (history)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # not started: the job's concurrency policy, or a paused job
    MISSED = "missed"  # not started: the job's misfire policy
    THROTTLED = "throttled"  # not fired: over the team's fires_per_minute quota
    UNKNOWN = "unknown"  # its executor was lost before reporting (at_most_once: not tried again)
    UPSTREAM_FAILED = "upstream_failed"  # a workflow step whose upstreams did not allow it to run


# What an executor may report; skipped and missed are fires it did not start (schedb.policies).
OUTCOME_STATUSES = (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT,
                    ExecutionStatus.SKIPPED, ExecutionStatus.MISSED)
CALLED_STATUSES = (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)  # webhook called


class Reason(StrEnum):
    """An execution record's reason: why a fire was not started, or how it ended."""

    SKIPPED_OVERLAP = "skipped_overlap"
    REPLACED = "replaced"
    MISSED = "missed"
    SKIPPED_PAUSED = "skipped_paused"  # came due while the job was paused
    EXECUTOR_LOST = "executor_lost"
    FIRES_PER_MINUTE = "fires_per_minute"
    PAUSED = "paused"  # a workflow step whose job is paused
    UPSTREAM_FAILED = "upstream_failed"


SKIP_REASONS = (Reason.SKIPPED_OVERLAP, Reason.REPLACED, Reason.MISSED)  # what an executor's skip may say


class Trigger(StrEnum):
    """What made a fire: a fire's `trigger` is one of these, or `manual:<key>`, `dependency:<run id>`."""

    SCHEDULE = "schedule"
    REPLAY = "replay"
    BACKFILL = "backfill"
    MANUAL = "manual"  # a prefix
    DEPENDENCY = "dependency"  # a prefix


class StepStatus(StrEnum):
    """A workflow step's status; the last five settle it (a fire's end gives the first four)."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    DELETED = "deleted"


SETTLED = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.UPSTREAM_FAILED,
           StepStatus.DELETED)


class TriggerRule(StrEnum):
    """When a dependent job fires, from its upstreams' steps in the run."""

    ALL_SUCCEEDED = "all_succeeded"
    ALL_DONE = "all_done"
    ANY_SUCCEEDED = "any_succeeded"


class Registration(TypedDict):
    """A service-registered job's declaration (schedb.fsm.registry)."""

    service: str
    name: str
    description: str
    parameters_schema: dict[str, Any]
    default_schedule: str | None
    schedule_override: str | None
    orphaned: bool


class Job(TypedDict):
    """state.jobs[job_id]."""

    spec: dict[str, Any]  # the validated spec (schedb.jobspec)
    created_ms: int
    updated_ms: int
    version: int
    next_fire_ms: int | None  # its slot (None: paused, or no occurrence left)
    active_fires: list[int]  # scheduled_ms of its fires in the book, in creation order
    team: str
    paused_ms: int | None
    decided_ms: NotRequired[int]  # every occurrence up to here was fired, missed or throttled
    ran_ms: NotRequired[int]  # the latest occurrence whose fire ended, or ran after a pause took it back
    backfilled_ms: NotRequired[list[int]]  # occurrences a backfill fired before the schedule decided them
    triggered_ms: NotRequired[int]  # the latest instant a trigger or workflow step took (State.unscheduled_ms)
    registration: NotRequired[Registration]


class Fire(TypedDict):
    """state.book.fires[fire_id]: an active fire (schedb.fsm.fires)."""

    fire_id: str  # job_id:scheduled_ms
    job_id: str
    scheduled_ms: int
    attempt: int
    attempt_base: int  # attempts before this fire's retry budget began (a replay continues numbering)
    node: str  # the executor holding it, or PENDING ("")
    assigned_ms: int
    due_ms: int
    lease_end_ms: int
    reported: list[int]  # attempts with a committed outcome
    trigger: str  # Trigger, or manual:<key> / dependency:<run id>
    run_id: str  # the workflow run it is a step of, or ""
    correlation_id: str
    params: NotRequired[dict[str, Any]]


class Execution(TypedDict):
    """A history record: one attempt's outcome, or an occurrence not fired."""

    fire_id: str
    job_id: str
    scheduled_ms: int
    attempt: int  # 0: never attempted (missed, throttled, upstream_failed …)
    node: str
    status: str  # ExecutionStatus
    http_status: int
    started_ms: int
    finished_ms: int
    duration_ms: int
    error: str
    committed_ms: int
    trigger: str
    reason: str  # Reason, or ""
    report: NotRequired[dict[str, Any]]  # schedb.report


class DeadLetter(TypedDict):
    fire_id: str
    job_id: str
    scheduled_ms: int
    attempts: int
    last_status: str
    last_http_status: int
    last_error: str
    dead_ms: int


class Step(TypedDict):
    status: str  # StepStatus
    fire_id: str | None


class Run(TypedDict):
    """state.runs[run_id]: a workflow run (schedb.fsm.workflow); its id is its root fire's."""

    run_id: str
    root: str
    team: str
    started_ms: int
    finished_ms: int | None
    steps: dict[str, Step]  # job id -> its step


class NodeRecord(TypedDict):
    raft_addr: str
    http_addr: str
    registered_ms: int
    draining: bool


class ApiKey(TypedDict):
    """Stored by the SHA-256 of its token only."""

    id: str
    hash: str
    team: str
    role: str
    name: str
    created_ms: int
    revoked_ms: int | None
    created_by: str


class Secret(TypedDict):
    sealed: bytes  # AES-GCM, sealed by the API node that received it (schedb.secretbox)
    created_ms: int
    updated_ms: int
    version: int


USAGE_FIELDS = ("fires", "attempts", "webhook_ms", "bytes_sent", "throttled")


class Usage(TypedDict):
    """A team's usage counters (USAGE_FIELDS)."""

    fires: int
    attempts: int
    webhook_ms: int
    bytes_sent: int
    throttled: int


class AuditRecord(TypedDict):
    seq: int
    at_ms: int
    key: str
    team: str
    role: str
    remote: str
    action: str  # the command's class name
    target: str
    result: str  # "ok" or the error code
