"""The simulated operator: a deterministic stream of operator actions as schedb Commands.

Everything comes from the `random.Random` the caller passes in (never a clock, a uuid or the
order of a set), and dicts are walked in sorted order, so one seed gives one workload.

- `initial_jobs(rng, count)`: the jobs the cluster starts with (CreateJob and CreateJobs).
- `Operator.next_action(rng, now_ms, jobs_known, dead_letters)`: at most one action per call:
  edit, pause, resume, delete, create, trigger, backfill, replay or drop a dead letter.

How the operator's changes are expressed, as the API expresses them (schedb.api.controls):
pause and resume are a ReplaceJob of the job's spec with `paused` set (the API's PATCH);
an edit is a ReplaceJob of the whole spec. A pause is most often followed, a few seconds
later, by its resume, timed a little before the job's next occurrence: a resume shortly
before a fire is where a past bug lived.

What the operator knows (`jobs_known`) is what `known_jobs(state)` reads from a replica:
job id -> the job's record (a copy: `spec`, `version`, ...) as GET /api/v1/jobs lists it.
It may be stale (a replica behind): an action on it may then be refused, as a real
operator's would be.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from schedb.commands import (
    BackfillJob,
    Command,
    CreateJob,
    CreateJobs,
    DeleteJob,
    DropDeadLetter,
    ReplaceJob,
    ReplayDeadLetter,
    TriggerJob,
)
from schedb.fsm.core import State
from schedb.schedule import parse_schedule

T0 = 1_800_000_000_000  # the simulation's first instant (wall clock, Unix ms)
# The operator's API key, as tests/unit/scenarios.py's ADMIN: admin of every team.
ADMIN = {"key": "k-operator", "team": "ops", "role": "admin", "remote": "192.0.2.1"}
# Never really called: the sim's receiver answers. Jobs share TARGETS receivers (by their number),
# as services share a target, so each target's circuit breaker (schedb.breaker) sees several jobs.
TARGETS = 4

EVERY_SECONDS = (5, 10, 15, 20, 30, 60)
SECOND_CRONS = ("*/10 * * * * *", "*/15 * * * * *", "0,30 * * * * *")
MINUTE_CRONS = ("* * * * *", "*/2 * * * *")
TIME_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
DELIVERY = ("at_least_once", "at_most_once")
CONCURRENCY = ("allow", "forbid", "replace")
MISFIRE = ("run_once", "run_all", "skip")
TRIGGER_RULES = ("all_succeeded", "all_done", "any_succeeded")
INITIAL_JOBS_MIN = 50
DEPENDENT_SHARE = 20  # one job in this many runs after an upstream (a small workflow), no schedule
BULK_SIZES = (4, 6, 8)  # jobs per CreateJobs

# Operator actions and their weights: pauses (each most often followed by its resume within
# seconds) are the most frequent on purpose.
ACTIONS: tuple[tuple[str, int], ...] = (
    ("pause", 20), ("pause_pair", 8), ("resume", 6), ("edit", 18), ("delete", 3), ("create", 6),
    ("trigger", 10), ("backfill", 6), ("replay", 6), ("drop", 2), ("storm", 3),
)
RESUME_SHARE = 0.8  # of pauses, those whose resume follows within seconds
EDITS: tuple[tuple[str, int], ...] = (("schedule", 3), ("timezone", 3), ("policy", 2), ("webhook", 1))


# -- the jobs --------------------------------------------------------------------------------


def job_id_of(number: int) -> str:
    return f"job-{number:03d}"


def draw_schedule(rng: random.Random) -> str:
    kind = rng.choice(("every", "every", "seconds", "minutes"))
    if kind == "every":
        return f"@every {rng.choice(EVERY_SECONDS)}s"
    return rng.choice(SECOND_CRONS if kind == "seconds" else MINUTE_CRONS)


def receiver_url(job_id: str) -> str:
    return f"http://receiver-{int(job_id.rsplit('-', 1)[1]) % TARGETS}.sim:8080/hook/{job_id}"


def draw_spec(rng: random.Random, job_id: str, upstreams: Sequence[str] = ()) -> dict[str, Any]:
    """A job as a user sends it (schedb.jobspec validates it). With upstreams, it runs after
    them and has no schedule of its own."""
    spec: dict[str, Any] = {
        "id": job_id, "timezone": rng.choice(TIME_ZONES),
        "webhook": {"url": receiver_url(job_id), "timeout_s": rng.randint(1, 10)},
        "retry": {"max_attempts": rng.randint(1, 3), "backoff_s": rng.choice((1, 2)), "backoff_max_s": 10},
        "delivery": rng.choice(DELIVERY), "concurrency": rng.choice(CONCURRENCY), "misfire": rng.choice(MISFIRE),
    }
    if upstreams:
        spec["depends_on"] = sorted(upstreams)
        spec["trigger_rule"] = rng.choice(TRIGGER_RULES)
    else:
        spec["schedule"] = draw_schedule(rng)
    return spec


def initial_jobs(rng: random.Random, count: int = 60, now_ms: int = T0) -> list[Command]:
    """At least INITIAL_JOBS_MIN jobs job-000, job-001, ...: some one by one (CreateJob), some in
    bulk (CreateJobs). A few run after an earlier job (depends_on) instead of on a schedule."""
    count = max(count, INITIAL_JOBS_MIN)
    specs = []
    for number in range(count):
        dependent = number >= 5 and rng.randrange(DEPENDENT_SHARE) == 0
        upstreams = [job_id_of(rng.randrange(number))] if dependent else []
        specs.append(draw_spec(rng, job_id_of(number), upstreams))
    commands: list[Command] = []
    while specs:
        size = rng.choice(BULK_SIZES) if rng.random() < 0.5 else 1
        batch, specs = specs[:size], specs[size:]
        if len(batch) == 1:
            commands.append(CreateJob(now_ms, batch[0], actor=ADMIN))
        else:
            commands.append(CreateJobs(now_ms, batch, actor=ADMIN))
    return commands


# -- what the operator reads -----------------------------------------------------------------


def known_jobs(state: State, now_ms: int) -> dict[str, dict[str, Any]]:
    """Every job, as the state holds it (the job list, GET /api/v1/jobs, shows the same to an
    admin): job id -> its record. Read-only, and not copied (the operator builds new specs)."""
    return {job_id: state.jobs[job_id] for job_id in sorted(state.jobs)}


def known_dead_letters(state: State, limit: int = 1_000) -> list[str]:
    """The fire ids of the newest dead letters (GET /api/v1/dlq)."""
    newest = list(state.dead_letters.values())[-limit:]  # as queries.dead_letters lists them, uncopied
    return sorted(letter["fire_id"] for letter in newest)


# -- the operator ----------------------------------------------------------------------------


class Operator:
    """Draws one operator action at a time. Call `next_action` as often as the simulation likes
    (e.g. every few hundred ms of the operator's clock): it answers None while it has nothing
    to do. Besides its random actions (about one per `mean_gap_ms`), it keeps an agenda of
    follow-ups it planned (a resume after a pause, a storm of pauses and resumes)."""

    def __init__(self, first_new_job: int = INITIAL_JOBS_MIN, mean_gap_ms: int = 2_000,
                 pinned_share: float = 0.2, actor: dict[str, Any] | None = None) -> None:
        self.next_job_number = first_new_job  # ids of the jobs it creates: job-<n>, n counting up
        self.mean_gap_ms = mean_gap_ms
        self.pinned_share = pinned_share  # edits that carry the version read (If-Match)
        self.actor = dict(actor or ADMIN)
        self.agenda: list[tuple[int, int, str, str]] = []  # (at ms, seq, "pause" | "resume", job id)
        self.agenda_seq = 0
        self.next_draw_ms: int | None = None
        self.drawn: dict[str, int] = {}  # action kind -> times drawn (for the sim's summary)

    def due(self, now_ms: int) -> bool:
        """Whether a call now may act (to skip building jobs_known when not)."""
        return self.next_draw_ms is None or now_ms >= self.next_draw_ms or \
            bool(self.agenda and self.agenda[0][0] <= now_ms)

    def next_action(self, rng: random.Random, now_ms: int, jobs_known: dict[str, dict[str, Any]],
                    dead_letters: Sequence[str] = ()) -> Command | None:
        """The next action due at now_ms, or None. dead_letters: fire ids of dead letters known."""
        while self.agenda and self.agenda[0][0] <= now_ms:
            _, _, kind, job_id = self.agenda.pop(0)
            command = self._planned(kind, job_id, now_ms, jobs_known)
            if command is not None:
                return command
        if self.next_draw_ms is None:
            self.next_draw_ms = now_ms + self._gap(rng)
        if now_ms < self.next_draw_ms:
            return None
        self.next_draw_ms = now_ms + self._gap(rng)
        kind = _weighted(rng, ACTIONS)
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        return self._draw(kind, rng, now_ms, jobs_known, sorted(dead_letters))

    def plan(self, at_ms: int, kind: str, job_id: str) -> None:
        """Put a pause or resume of the job on the agenda for at_ms."""
        self.agenda_seq += 1
        self.agenda.append((at_ms, self.agenda_seq, kind, job_id))
        self.agenda.sort()

    def pause_resume_storm(self, rng: random.Random, now_ms: int, jobs_known: dict[str, dict[str, Any]],
                           jobs: int = 4, pairs: int = 3) -> None:
        """Plan `pairs` pause/resume pairs on each of a few jobs within the next ~20 s, each resume
        a little before one of the job's occurrences."""
        scheduled = _scheduled_ids(jobs_known)
        for job_id in rng.sample(scheduled, min(jobs, len(scheduled))):
            at_ms = now_ms
            for _ in range(pairs):
                at_ms += rng.randint(200, 3_000)
                self.plan(at_ms, "pause", job_id)
                at_ms = self._resume_time(rng, at_ms, jobs_known[job_id])
                self.plan(at_ms, "resume", job_id)

    # -- the actions ---------------------------------------------------------------------

    def _gap(self, rng: random.Random) -> int:
        return rng.randint(self.mean_gap_ms // 2, self.mean_gap_ms * 3 // 2)

    def _planned(self, kind: str, job_id: str, now_ms: int, jobs_known: dict[str, dict[str, Any]]) -> Command | None:
        """A pause or resume planned earlier. Sent whatever the operator's view says of the job's
        pause (the view may be behind): setting paused to what it already is changes no timing."""
        job = jobs_known.get(job_id)
        if job is None:
            return None
        return ReplaceJob(now_ms, {**job["spec"], "paused": kind == "pause"}, actor=self.actor)

    def _draw(self, kind: str, rng: random.Random, now_ms: int, jobs_known: dict[str, dict[str, Any]],
              dead_letters: list[str]) -> Command | None:
        if kind in ("replay", "drop"):
            return self._dead_letter(kind, rng, now_ms, dead_letters)
        if kind == "create":
            return self._create(rng, now_ms, jobs_known)
        if kind == "storm":
            self.pause_resume_storm(rng, now_ms, jobs_known)
            return None
        if not jobs_known:
            return None
        job = jobs_known[rng.choice(sorted(jobs_known))]
        if kind == "pause":
            return self._pause(rng, now_ms, job)
        if kind == "pause_pair":
            self._pause_pair(rng, now_ms, job)
            return None
        if kind == "resume":
            return self._resume(rng, now_ms, jobs_known)
        if kind == "edit":
            return self._edit(rng, now_ms, job)
        if kind == "delete":
            return self._delete(rng, now_ms, job, jobs_known)
        if kind == "trigger":
            return TriggerJob(now_ms, job["spec"]["id"], correlation_id=f"op-{now_ms}", force=rng.random() < 0.3,
                              actor=self.actor)
        return self._backfill(rng, now_ms, job)

    def _replace(self, rng: random.Random, now_ms: int, job: dict[str, Any], spec: dict[str, Any]) -> Command:
        pinned = job["version"] if rng.random() < self.pinned_share else 0
        return ReplaceJob(now_ms, spec, if_version=pinned, actor=self.actor)

    def _pause(self, rng: random.Random, now_ms: int, job: dict[str, Any]) -> Command:
        """Pause now; most often plan the resume within seconds, a little before a fire."""
        if rng.random() < RESUME_SHARE and job["spec"]["schedule"] is not None:
            self.plan(self._resume_time(rng, now_ms, job), "resume", job["spec"]["id"])
        return self._replace(rng, now_ms, job, {**job["spec"], "paused": True})

    def _pause_pair(self, rng: random.Random, now_ms: int, job: dict[str, Any]) -> None:
        """Plan a pause just before one of the job's next occurrences (its fire may already be
        assigned, within the dispatcher's lookahead) and its resume a little before a later one."""
        upcoming = _next_occurrence(job, now_ms + 1_000)
        if upcoming is not None:
            pause_ms = max(now_ms, upcoming - rng.randint(0, 5_500))
            self.plan(pause_ms, "pause", job["spec"]["id"])
            self.plan(self._resume_time(rng, pause_ms, job), "resume", job["spec"]["id"])

    def _resume_time(self, rng: random.Random, paused_ms: int, job: dict[str, Any]) -> int:
        """When to resume a job paused at paused_ms: half the time 0.3-5 s later, else 0.2-4.5 s
        before one of its occurrences (the one after the first second of the pause)."""
        soon = paused_ms + rng.randint(300, 5_000)
        upcoming = _next_occurrence(job, paused_ms + 1_000)
        if rng.random() < 0.5 or upcoming is None:
            return soon
        at_ms = upcoming - rng.randint(200, 4_500)
        return at_ms if at_ms > paused_ms + 200 else soon

    def _resume(self, rng: random.Random, now_ms: int, jobs_known: dict[str, dict[str, Any]]) -> Command | None:
        paused = [job_id for job_id in sorted(jobs_known) if jobs_known[job_id]["spec"]["paused"]]
        if not paused:
            return None
        job = jobs_known[rng.choice(paused)]
        return self._replace(rng, now_ms, job, {**job["spec"], "paused": False})

    def _edit(self, rng: random.Random, now_ms: int, job: dict[str, Any]) -> Command:
        spec = dict(job["spec"])
        what = _weighted(rng, EDITS) if spec["schedule"] is not None else rng.choice(("policy", "webhook"))
        if what == "schedule":
            spec["schedule"] = _other(rng, spec["schedule"], draw_schedule)
        elif what == "timezone":  # @every and these crons: the same instants in every zone
            spec["timezone"] = _other(rng, spec["timezone"], lambda r: r.choice(TIME_ZONES))
        elif what == "policy":
            field, options = rng.choice((("misfire", MISFIRE), ("concurrency", CONCURRENCY), ("delivery", DELIVERY)))
            spec[field] = rng.choice(options)
        else:
            spec["webhook"] = {**spec["webhook"], "timeout_s": rng.randint(1, 10)}
            spec["retry"] = {**spec["retry"], "max_attempts": rng.randint(1, 3)}
        return self._replace(rng, now_ms, job, spec)

    def _delete(self, rng: random.Random, now_ms: int, job: dict[str, Any],
                jobs_known: dict[str, dict[str, Any]]) -> Command | None:
        job_id = job["spec"]["id"]
        if _strands_a_dependent(job_id, jobs_known):
            return None  # the state would refuse it: a dependent would have neither schedule nor upstream
        pinned = job["version"] if rng.random() < self.pinned_share else 0
        return DeleteJob(now_ms, job_id, if_version=pinned, force=True, actor=self.actor)

    def _create(self, rng: random.Random, now_ms: int, jobs_known: dict[str, dict[str, Any]]) -> Command:
        job_id = job_id_of(self.next_job_number)
        self.next_job_number += 1
        scheduled = _scheduled_ids(jobs_known)
        upstreams = [rng.choice(scheduled)] if scheduled and rng.randrange(DEPENDENT_SHARE) == 0 else []
        return CreateJob(now_ms, draw_spec(rng, job_id, upstreams), actor=self.actor)

    def _backfill(self, rng: random.Random, now_ms: int, job: dict[str, Any]) -> Command | None:
        if job["spec"]["schedule"] is None:
            return None
        end_ms = now_ms - rng.randint(0, 5_000)
        return BackfillJob(now_ms, job["spec"]["id"], end_ms - rng.randint(5_000, 60_000), end_ms,
                           correlation_id=f"op-{now_ms}", actor=self.actor)

    def _dead_letter(self, kind: str, rng: random.Random, now_ms: int, dead_letters: list[str]) -> Command | None:
        if not dead_letters:
            return None
        fire_id = rng.choice(dead_letters)
        if kind == "replay":
            return ReplayDeadLetter(now_ms, fire_id, correlation_id=f"op-{now_ms}", actor=self.actor)
        return DropDeadLetter(now_ms, fire_id, actor=self.actor)


# -- helpers ---------------------------------------------------------------------------------


def _weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in options], weights=[weight for _, weight in options])[0]


def _other(rng: random.Random, current: str, draw: Callable[[random.Random], str]) -> str:
    """Another value than current, if a few draws find one."""
    for _ in range(8):
        value = draw(rng)
        if value != current:
            return value
    return current


def _next_occurrence(job: dict[str, Any], after_ms: int) -> int | None:
    spec = job["spec"]
    if spec["schedule"] is None:
        return None
    return parse_schedule(spec["schedule"], spec["timezone"]).next_after(after_ms)


def _scheduled_ids(jobs_known: dict[str, dict[str, Any]]) -> list[str]:
    return [job_id for job_id in sorted(jobs_known) if jobs_known[job_id]["spec"]["schedule"] is not None]


def _strands_a_dependent(job_id: str, jobs_known: dict[str, dict[str, Any]]) -> bool:
    """Whether a job without a schedule depends on job_id alone (schedb.fsm.workflow.deletion_error)."""
    return any(job["spec"]["schedule"] is None and job["spec"]["depends_on"] == [job_id]
               for job in jobs_known.values())
