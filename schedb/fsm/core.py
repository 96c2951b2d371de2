"""The replicated state: every field it has, declared here and nowhere else, and the
primitive operations the command handlers share.

Rules (the contract with schedb.raft, as in hashicorp/raft's FSM):
- Everything here is deterministic: no clock, no randomness, no I/O, no logging. Time
  is `now_ms`, set by apply (schedb.fsm.machine) from the command being applied.
- Fields hold plain values only (dicts, lists, deques, str, int, bool, bytes, None),
  and the FireBook, SlotIndex and StateLimits: a snapshot is a pickle of this object,
  so a field added, removed or reshaped is a new SNAPSHOT_VERSION, with its upgrade
  in schedb.fsm.upgrade, and a place in the canonical bytes (schedb.fsm.machine).
- Handlers (the modules above this one) change the fields through these primitives or
  directly; none adds a field of its own.

Reads (`due_jobs`, `fire_changes`) are for the node's other parts, which hold the lock
that serializes them with apply.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from schedb.fsm.fires import FireBook, fire_id_of
from schedb.fsm.limits import BUILTIN_QUOTAS, StateLimits
from schedb.fsm.misfire import COMMAND_WORK_MAX
from schedb.fsm.model import (
    ApiKey,
    AuditRecord,
    DeadLetter,
    Execution,
    Fire,
    Job,
    NodeRecord,
    Run,
    Secret,
    Trigger,
    Usage,
)
from schedb.fsm.slots import SlotIndex
from schedb.schedule import parse_schedule

# The shape of the pickled State. 1: before schedb.fsm (the field did not exist); 2: every
# field declared here, and this one. An older snapshot is upgraded on load (schedb.fsm.upgrade).
SNAPSHOT_VERSION = 2
CORRELATION_ID_LEN_MAX = 128
COUNTERS = ("commands_rejected", "fires_assigned", "assign_stale", "fires_reassigned", "outcomes_committed",
            "duplicate_completions", "retries_scheduled", "dead_lettered", "dead_letters_evicted",
            "fires_missed", "fires_skipped", "at_most_once_abandoned", "triggered", "backfilled", "replayed",
            "idempotent_replays", "fires_throttled", "quota_refusals", "dependency_fires", "upstream_failed",
            "catch_ups_deferred")


class State:
    """The fields of the replicated state, in the order they were introduced."""

    snapshot_version: int
    limits: StateLimits
    now_ms: int
    leader_clock: bool
    applied: int
    jobs: dict[str, Job]
    slots: SlotIndex
    book: FireBook
    history: dict[str, deque[Execution]]
    recent: deque[Execution]
    dead_letters: dict[str, DeadLetter]
    idempotency: dict[str, tuple[str, int]]
    nodes: dict[str, NodeRecord]
    counters: dict[str, int]
    api_keys: dict[str, ApiKey]
    key_hashes: dict[str, str]
    quotas: dict[str, dict[str, int]]
    default_quotas: dict[str, int]
    secrets: dict[str, dict[str, Secret]]
    usage: dict[str, Usage]
    fire_windows: dict[str, list[int]]
    team_jobs: dict[str, int]
    audit: deque[AuditRecord]
    audit_seq: int
    dependents: dict[str, list[str]]
    runs: dict[str, Run]
    finished_runs: dict[str, None]
    history_order: deque[tuple[str, int]]
    history_next: dict[str, int]
    history_written: int
    history_total: int
    catch_up_work: list[int]

    def __init__(self, limits: StateLimits | None = None) -> None:
        self.snapshot_version = SNAPSHOT_VERSION
        self.limits = limits or StateLimits()
        self.now_ms = 0  # replicated time: the leader's (schedb.fsm.replicated_time)
        # Off until the first AssignFires of a leader of this version (it names itself): a log
        # written before replicated time was the leader's replays as it applied then.
        self.leader_clock = False
        self.applied = 0  # commands applied
        self.jobs = {}
        self.slots = SlotIndex()  # each job waiting for its next fire, by second
        self.book = FireBook()  # active fires
        self.history = {}  # job id -> its newest records (schedb.fsm.history bounds them all)
        self.recent = deque(maxlen=self.limits.recent_executions)  # the cluster's newest records
        self.dead_letters = {}  # fire id -> a fire that will not be tried again
        self.idempotency = {}  # "team\0key" -> (job_id, expires_ms)
        self.nodes = {}  # node id -> its addresses
        self.counters = dict.fromkeys(COUNTERS, 0)
        # Teams (schedb.fsm.tenancy)
        self.api_keys = {}  # key id -> the key (its token's hash, never the token)
        self.key_hashes = {}  # sha256 of a live key's token -> key id
        self.quotas = {}  # team -> the quotas an admin set for it
        self.default_quotas = dict(BUILTIN_QUOTAS)  # every team's, unless set for it (the leader's config)
        self.secrets = {}  # team -> name -> sealed secret
        self.usage = {}  # team -> Usage
        self.fire_windows = {}  # team -> [minute, fires in it]
        self.team_jobs = {}  # team -> jobs it has
        self.audit = deque(maxlen=self.limits.audit_records)
        self.audit_seq = 0
        # Workflows (schedb.fsm.workflow)
        self.dependents = {}  # upstream job id -> sorted ids of the jobs that depend on it
        self.runs = {}  # run id -> run
        self.finished_runs = {}  # run ids in the order they finished: the first to go
        # The cluster-wide history bound (schedb.fsm.history)
        self.history_order = deque()  # (job_id, seq) in the order records were written
        self.history_next = {}  # job_id -> seq of the job's next record
        self.history_written = 0  # records ever written: where a new ring starts numbering
        self.history_total = 0  # records in all rings
        # [the command it was spent in (applied), work spent]: see may_catch_up
        self.catch_up_work = [0, 0]

    # -- reads (callers hold the lock that serializes them with apply) --------

    def due_jobs(self, until_ms: int, limit: int, from_ms: int | None = None) -> list[tuple[str, int]]:
        """(job_id, next_fire_ms) of jobs whose next fire is at or before until_ms (and at or
        after from_ms, when given), earliest first."""
        out: list[tuple[str, int]] = []
        for job_id in self.slots.up_to(until_ms, from_ms):
            next_ms = cast(int, self.jobs[job_id]["next_fire_ms"])  # a job in a slot has one
            if next_ms <= until_ms and (from_ms is None or next_ms >= from_ms):
                out.append((job_id, next_ms))
                if len(out) >= limit:
                    break
        return out

    def fire_changes(self, node_id: str, since: int) -> tuple[int, bool, dict[str, dict[str, Any] | None]]:
        """What changed in node_id's fires after version `since`: (version now, whether this is
        the full set, {fire_id: a copy of the fire if node_id holds it, else None})."""
        book = self.book
        ids = book.touched_since(node_id, since)
        full = ids is None
        out: dict[str, dict[str, Any] | None] = {}
        for fire_id in book.by_node.get(node_id, {}) if ids is None else ids:
            fire = book.fires.get(fire_id)
            out[fire_id] = dict(fire) if fire is not None and fire["node"] == node_id else None
        return book.version_of(node_id), full, out

    # -- a job's slot ------------------------------------------------------------

    def schedule_from(self, job_id: str, after_ms: int) -> None:
        """Move the job to the slot of its first occurrence after after_ms (out of any slot
        when paused). An occurrence in the past stays there: the dispatcher's assign
        applies the misfire policy."""
        self.place(job_id, next_fire(self.jobs[job_id]["spec"], after_ms))

    def place(self, job_id: str, next_ms: int | None) -> None:
        """Put the job in the slot of next_ms. An occurrence already decided (fired, missed or
        throttled: schedb.fsm.occurrences.decide) is never placed again, so a resume or a
        reschedule cannot fire it twice; only a fire taken back before it started (withdrawn)
        may come back."""
        self.unschedule(job_id)
        job = self.jobs[job_id]
        decided_ms = job.get("decided_ms")
        if next_ms is not None and decided_ms is not None and next_ms <= decided_ms and \
                fire_id_of(job_id, next_ms) not in self.book.withdrawn:
            next_ms = next_fire(job["spec"], decided_ms)
        job["next_fire_ms"] = next_ms
        if next_ms is not None:
            self.slots.add(job_id, next_ms)

    def occurrence_ran(self, job_id: str, scheduled_ms: int) -> None:
        """The job's occurrence at scheduled_ms is over: its fire ended (or ran after a pause took
        it back). A later withdrawal must not make it undecided again, even when it is past
        replicated time (schedb.fsm.occurrences.withdraw_future_fires): executors fire by their
        own clocks, inside their fence, while a cut-off leader's time stands still."""
        job = self.jobs[job_id]
        job["ran_ms"] = max(job.get("ran_ms", scheduled_ms), scheduled_ms)

    def unscheduled_ms(self, job_id: str) -> int:
        """The instant that names a fire no schedule placed (a trigger, a workflow step): now, or
        the first instant after it, and after the job's last such instant, that is neither a
        whole second nor an instant of the job's schedule. Cron and @every fire on whole seconds
        only (cron's finest field is the second, @every counts whole seconds from the epoch),
        whatever the job is edited to later; a fire id names one run: one shared with an
        occurrence, or with an earlier trigger at a replicated time that stood still, would be
        two runs under one Idempotency-Key (simulator seed 447000035)."""
        job = self.jobs[job_id]
        instant_ms = max(self.now_ms, job.get("triggered_ms", -1) + 1)
        while instant_ms % 1000 == 0 or fire_id_of(job_id, instant_ms) in self.book.fires or \
                self._an_occurrence(job, instant_ms):
            instant_ms += 1
        job["triggered_ms"] = instant_ms
        return instant_ms

    @staticmethod
    def _an_occurrence(job: Job, instant_ms: int) -> bool:
        """Is instant_ms one of the job's schedule's own instants (an `@at` may name a fraction
        of a second; every other schedule fires on whole seconds only)?"""
        spec = job["spec"]
        if spec["schedule"] is None:
            return False
        return parse_schedule(spec["schedule"], spec["timezone"]).next_after(instant_ms - 1) == instant_ms

    def unschedule(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["next_fire_ms"] is not None:
            self.slots.remove(job_id, job["next_fire_ms"])
            job["next_fire_ms"] = None

    # -- fires -------------------------------------------------------------------

    def add_fire(self, job_id: str, scheduled_ms: int, node: str, *, trigger: str, attempt: int = 1,
                 correlation_id: Any = "", run_id: str = "", params: dict[str, Any] | None = None) -> Fire:
        """A new active fire in the book and its job (a workflow run hears of it from
        schedb.fsm.workflow.new_fire, the one caller). trigger: schedule, manual:<key>, replay,
        backfill or dependency:<run id>.

        A fire taken back earlier (pause, reschedule) with the same id comes back to life here:
        its webhook may have started, so the new fire continues its attempt numbers and knows
        what was reported. One fire id is one fire, whatever happened to it in between."""
        fire_id = fire_id_of(job_id, scheduled_ms)
        reported: list[int] = []
        twin = self.book.withdrawn.pop(fire_id, None)
        if twin is not None:
            attempt = max(attempt, twin["attempt"] + 1)
            reported = list(twin["reported"])
        fire: Fire = {
            "fire_id": fire_id, "job_id": job_id, "scheduled_ms": scheduled_ms, "attempt": attempt,
            "attempt_base": attempt - 1, "node": node, "assigned_ms": self.now_ms,
            "due_ms": scheduled_ms if trigger == Trigger.SCHEDULE else max(scheduled_ms, self.now_ms),
            "lease_end_ms": 0, "reported": reported, "trigger": str(trigger), "run_id": run_id,
            "correlation_id": str(correlation_id)[:CORRELATION_ID_LEN_MAX]}
        if params:
            fire["params"] = params
        self.set_lease(fire)
        self.book.add(fire)
        self.jobs[job_id]["active_fires"].append(scheduled_ms)
        self.usage_of(self.jobs[job_id]["team"])["fires"] += 1
        return fire

    def remove_fire(self, fire_id: str) -> Fire:
        """The fire leaves the book and its job (its run hears of it from
        schedb.fsm.workflow.end_fire, the one caller)."""
        fire = self.book.end(fire_id)
        self.jobs[fire["job_id"]]["active_fires"].remove(fire["scheduled_ms"])
        return fire

    def set_lease(self, fire: Fire) -> None:
        """When the leader may give the fire's attempt to another executor: its timeout and a
        grace after it is due (or now, if later)."""
        timeout_ms = int(self.jobs[fire["job_id"]]["spec"]["webhook"]["timeout_s"] * 1000)
        fire["lease_end_ms"] = max(fire["due_ms"], self.now_ms) + timeout_ms + self.limits.lease_grace_ms

    # -- per team and per command ------------------------------------------------

    def usage_of(self, team: str) -> Usage:
        usage = self.usage.get(team)
        if usage is None:
            usage = self.usage[team] = Usage(fires=0, attempts=0, webhook_ms=0, bytes_sent=0, throttled=0)
        return usage

    def may_catch_up(self) -> bool:
        """Whether the command being applied may start another job's catch-up (the first
        always may): the work is bounded per command (schedb.fsm.misfire)."""
        return self._catch_up_spent() < COMMAND_WORK_MAX

    def spend_catch_up(self, work: int) -> None:
        self.catch_up_work = [self.applied, self._catch_up_spent() + work]

    def _catch_up_spent(self) -> int:
        command, work = self.catch_up_work
        return work if command == self.applied else 0


def next_fire(spec: dict[str, Any], after_ms: int) -> int | None:
    """A job's first fire after after_ms, or None (paused, or a schedule with no fire left)."""
    if spec["paused"] or spec["schedule"] is None:  # None: it runs only after its upstreams
        return None
    return parse_schedule(spec["schedule"], spec["timezone"]).next_after(after_ms)
