"""The state's invariants, as code: what holds after every command that apply runs.

`violations(state)` lists what does not hold (empty when all is well); `check(state)` raises
InvariantViolation with that list. Read-only and deterministic; not called by apply (a walk
of the whole state): the tests run it after every command of their scenarios and of random
command scripts (tests/unit/test_invariants.py). Each check names the rule it guards.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from schedb.fsm.core import COUNTERS, State
from schedb.fsm.fires import PENDING, FireBook, fire_id_of
from schedb.fsm.limits import StateLimits
from schedb.fsm.model import SETTLED, StepStatus, Trigger
from schedb.fsm.occurrences import BACKFILLED_MAX
from schedb.fsm.slots import SlotIndex

PLAIN = (dict, list, tuple, str, int, bool, float, bytes, type(None), deque)


class InvariantViolation(AssertionError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check(state: State) -> None:
    problems = violations(state)
    if problems:
        raise InvariantViolation(problems)


def violations(state: State) -> list[str]:
    return [problem for rule in RULES for problem in rule(state)]


def fields_are_the_declared_ones(state: State) -> Iterable[str]:
    """The State has exactly the fields schedb.fsm.core declares: no handler adds one."""
    declared, present = set(State.__annotations__), set(vars(state))
    if present != declared:
        yield f"fields: {sorted(present - declared)} not declared, {sorted(declared - present)} missing"


def fires_match_their_jobs(state: State) -> Iterable[str]:
    """Every active fire of a job is in the book, once, and every fire in the book is one of
    its job's active fires."""
    in_book = Counter((f["job_id"], f["scheduled_ms"]) for f in state.book.fires.values())
    listed = Counter((job_id, ms) for job_id, job in state.jobs.items() for ms in job["active_fires"])
    for key in sorted(set(in_book) | set(listed)):
        if in_book[key] != 1 or listed[key] != 1:
            yield f"fire {fire_id_of(*key)}: in the book {in_book[key]}x, in its job's active fires {listed[key]}x"
    for fire_id, fire in state.book.fires.items():
        if fire_id != fire["fire_id"] or fire_id != fire_id_of(fire["job_id"], fire["scheduled_ms"]):
            yield f"fire {fire_id}: filed under another id"


def book_indexes_agree(state: State) -> Iterable[str]:
    """A fire is pending exactly when no node holds it; by_node lists each node's fires, no empty entry."""
    book = state.book
    indexed = {f: PENDING for f in book.pending}
    for node, fire_ids in book.by_node.items():
        if not fire_ids:
            yield f"book: node {node} has an empty entry"
        for fire_id in fire_ids:
            if fire_id in indexed:
                yield f"fire {fire_id}: indexed twice"
            indexed[fire_id] = node
    if indexed != {fire_id: fire["node"] for fire_id, fire in book.fires.items()}:
        yield "book: by_node and pending do not index exactly the fires by their node"


def fires_are_held_by_known_nodes(state: State) -> Iterable[str]:
    """A fire's node is a registered node, or PENDING."""
    for fire_id, fire in state.book.fires.items():
        if fire["node"] != PENDING and fire["node"] not in state.nodes:
            yield f"fire {fire_id}: held by unregistered node {fire['node']!r}"


def fires_are_well_formed(state: State) -> Iterable[str]:
    """Attempts count from 1 past the retry budget's base; reported attempts are ones that ran."""
    for fire_id, fire in state.book.fires.items():
        if not fire["attempt_base"] < fire["attempt"]:
            yield f"fire {fire_id}: attempt {fire['attempt']} not above its base {fire['attempt_base']}"
        reported = fire["reported"]
        if len(set(reported)) != len(reported) or not all(1 <= a <= fire["attempt"] for a in reported):
            yield f"fire {fire_id}: reported attempts {reported} beyond 1..{fire['attempt']} or repeated"
        if fire["lease_end_ms"] < fire["due_ms"]:
            yield f"fire {fire_id}: lease ends before it is due"


def withdrawn_fires_are_not_live(state: State) -> Iterable[str]:
    """No fire is both active and withdrawn, or kept as ended; those kept belong to jobs that
    exist; both bounded."""
    for name, kept, bound in (("withdrawn", state.book.withdrawn, state.limits.withdrawn_max),
                              ("ended", state.book.ended, state.limits.ended_max)):
        for fire_id in sorted(set(state.book.fires) & set(kept)):
            yield f"fire {fire_id}: both active and {name}"
        for fire_id, fire in kept.items():
            if fire["job_id"] not in state.jobs:
                yield f"{name} fire {fire_id}: its job is gone"
        if len(kept) > bound:
            yield f"{len(kept)} {name} fires, over {bound}"


def jobs_sit_in_their_slot(state: State) -> Iterable[str]:
    """Each job's next_fire_ms is in the slot index (once), and the index holds nothing else."""
    slots = state.slots
    if slots.keys != sorted(slots.slots) or any(not slot for slot in slots.slots.values()):
        yield "slots: keys not the sorted non-empty seconds"
    placed = {job_id: second for second, slot in slots.slots.items() for job_id in slot}
    if sum(len(slot) for slot in slots.slots.values()) != len(placed):
        yield "slots: a job sits in two slots"
    expected = {job_id: job["next_fire_ms"] // 1000 for job_id, job in state.jobs.items()
                if job["next_fire_ms"] is not None}
    for job_id in sorted(set(placed) | set(expected)):
        if placed.get(job_id) != expected.get(job_id):
            yield f"job {job_id}: next fire in second {expected.get(job_id)}, slot index says {placed.get(job_id)}"


def scheduled_fires_are_decided(state: State) -> Iterable[str]:
    """Every scheduled fire is of a decided occurrence: decided_ms ≥ its scheduled_ms (so State.place
    cannot put the job back on it)."""
    for job_id, job in state.jobs.items():
        for ms in job["active_fires"]:
            fire = state.book.fires.get(fire_id_of(job_id, ms))
            if fire is not None and fire["trigger"] == Trigger.SCHEDULE and job.get("decided_ms", -1) < ms:
                yield f"job {job_id}: scheduled fire at {ms} past decided_ms {job.get('decided_ms')}"


def history_within_bounds(state: State) -> Iterable[str]:
    """Each ring within history_per_job, the count right, all within the cluster-wide bound."""
    limits = state.limits
    if set(state.history) != set(state.history_next) or not set(state.history) <= set(state.jobs):
        yield "history: rings, their numbering and the jobs disagree"
    for job_id, ring in state.history.items():
        if ring.maxlen != limits.history_per_job:
            yield f"history of {job_id}: ring bound {ring.maxlen}, not {limits.history_per_job}"
    total = sum(len(ring) for ring in state.history.values())
    if total != state.history_total:
        yield f"history: {total} records, counted {state.history_total}"
    if total > max(limits.history_total_max, len(state.history) * limits.history_min_per_job):
        yield f"history: {total} records over the cluster-wide bound"
    if state.recent.maxlen != limits.recent_executions:
        yield "recent executions: bound is not the limit"


def bounded_collections(state: State) -> Iterable[str]:
    limits = state.limits
    bounds = {"dead letters": (len(state.dead_letters), limits.dead_letters_max),
              "idempotency keys": (len(state.idempotency), limits.idempotency_keys_max),
              "runs": (len(state.runs), limits.runs_max),
              "live api keys": (len(state.key_hashes), limits.api_keys_max)}
    for name, (count, bound) in bounds.items():
        if count > bound:
            yield f"{count} {name}, over {bound}"
    if state.audit.maxlen != limits.audit_records:
        yield "audit: bound is not the limit"
    for job_id, job in state.jobs.items():
        backfilled = job.get("backfilled_ms", [])
        if len(backfilled) > BACKFILLED_MAX or backfilled != sorted(set(backfilled)):
            yield f"job {job_id}: backfilled_ms not ascending within {BACKFILLED_MAX}"


def derived_fields_agree(state: State) -> Iterable[str]:
    """What is kept alongside other fields matches them: key hashes, dependents, team job counts,
    finished runs."""
    live = {key["hash"]: key_id for key_id, key in state.api_keys.items() if key["revoked_ms"] is None}
    if state.key_hashes != live:
        yield "key_hashes: not the live keys' hashes"
    dependents: dict[str, list[str]] = {}
    for job_id, job in state.jobs.items():
        for upstream in job["spec"]["depends_on"]:
            dependents.setdefault(upstream, []).append(job_id)
    if state.dependents != {u: sorted(d) for u, d in dependents.items()}:
        yield "dependents: not the jobs' depends_on, inverted"
    teams = Counter(job["team"] for job in state.jobs.values())
    if any(state.team_jobs.get(team, 0) != count for team, count in teams.items()) or \
            any(count and team not in teams for team, count in state.team_jobs.items()):
        yield f"team_jobs {state.team_jobs}: not the jobs per team {dict(teams)}"
    if set(state.finished_runs) != {r for r, run in state.runs.items() if run["finished_ms"] is not None}:
        yield "finished_runs: not the finished runs"


def runs_follow_their_fires(state: State) -> Iterable[str]:
    """A running step's fire is active and names the run; a run is finished exactly when every
    step has settled."""
    for run_id, run in state.runs.items():
        for job_id, step in run["steps"].items():
            fire = state.book.fires.get(step["fire_id"] or "")
            if step["status"] == StepStatus.RUNNING and (fire is None or fire["run_id"] != run_id):
                yield f"run {run_id}: step {job_id} running with no active fire of the run"
        settled = all(step["status"] in SETTLED for step in run["steps"].values())
        if settled != (run["finished_ms"] is not None):
            yield f"run {run_id}: finished_ms {run['finished_ms']} while settled is {settled}"


def counters_are_counts(state: State) -> Iterable[str]:
    if set(state.counters) != set(COUNTERS):
        yield f"counters: {sorted(set(state.counters) ^ set(COUNTERS))} declared or counted, not both"
    for name, value in state.counters.items():
        if not isinstance(value, int) or value < 0:
            yield f"counter {name}: {value!r}"


def values_are_plain(state: State) -> Iterable[str]:
    """Fields hold plain values only (exact builtin types; no enum member, no object): a snapshot
    is a pickle of them, and the canonical bytes a msgpack of them."""
    for name, value in vars(state).items():
        if name in ("book", "slots", "limits"):
            expected = {"book": FireBook, "slots": SlotIndex, "limits": StateLimits}[name]
            if type(value) is not expected:
                yield f"{name}: a {type(value).__name__}"
            inner = vars(value).values() if name != "limits" else ()
        else:
            inner = (value,)
        for item in inner:
            if (bad := _first_not_plain(item)) is not None:
                yield f"{name}: holds a {type(bad).__name__} ({bad!r:.60})"


def _first_not_plain(value: Any) -> Any:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) not in PLAIN:
            return item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | deque):
            stack.extend(item)
    return None


RULES: tuple[Callable[[State], Iterable[str]], ...] = (
    fields_are_the_declared_ones, fires_match_their_jobs, book_indexes_agree, fires_are_held_by_known_nodes,
    fires_are_well_formed, withdrawn_fires_are_not_live, jobs_sit_in_their_slot, scheduled_fires_are_decided,
    history_within_bounds, bounded_collections, derived_fields_agree, runs_follow_their_fires, counters_are_counts,
    values_are_plain,
)
