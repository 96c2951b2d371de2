"""Command scripts for property tests of the state machine: every kind of command, drawn one at
a time from what the state holds now (its fires, jobs, dead letters), so most commands hit.

A `Chooser` makes the choices: `HypothesisChooser` (shrinkable, for property tests) or
`RandomChooser` (a seeded random.Random, for long reproducible scripts). The script imports
only commands and the job spec, so it drives any version of the state machine the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

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
    Outcome,
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

T0 = 1_800_000_000_000
JOB_IDS = ("a", "b", "c", "d", "e")
NODES = ("node1", "node2", "node3", "node9")  # node9 never registers
TEAMS = ("", "t1", "t2")
SCHEDULES = ("@every 1s", "@every 3s", "*/2 * * * * *", "0 * * * *", "@hourly", None)
STATUSES = ("succeeded", "failed", "timed_out", "skipped", "missed")
ADMIN = {"key": "k-admin", "team": "ops", "role": "admin", "remote": "127.0.0.1"}
T = TypeVar("T")


class Chooser(Protocol):
    def pick(self, options: Sequence[T]) -> T: ...
    def integer(self, low: int, high: int) -> int: ...


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


class HypothesisChooser:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def pick(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(list(options)))

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))


def start(state: Any) -> list[dict[str, Any]]:
    """A leader's first tick and three registered nodes."""
    results = [state.apply(AssignFires(T0, [], leader_id="node1"))]
    for n in (1, 2, 3):
        results.append(state.apply(RegisterNode(T0, f"node{n}", f"127.0.0.1:900{n}", f"127.0.0.1:800{n}")))
    return results


def spec(c: Chooser, job_id: str, known: Sequence[str] = JOB_IDS) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": job_id, "webhook": {"url": "http://127.0.0.1/h", "timeout_s": c.pick((1, 5))},
                           "paused": c.integer(0, 4) == 0, "retry": {"max_attempts": c.integer(1, 3), "backoff_s": 1},
                           "misfire": c.pick(("run_once", "run_all", "skip")),
                           "concurrency": c.pick(("allow", "forbid", "replace")),
                           "delivery": c.pick(("at_least_once", "at_most_once"))}
    upstreams = sorted({c.pick(known or JOB_IDS) for _ in range(c.integer(0, 2))} - {job_id})
    schedule = c.pick(SCHEDULES)
    if upstreams:
        raw["depends_on"] = upstreams
        raw["trigger_rule"] = c.pick(("all_succeeded", "all_done", "any_succeeded"))
    if schedule is not None or not upstreams:
        raw["schedule"] = schedule or "@every 2s"
    return raw


def _fire(state: Any, c: Chooser) -> dict[str, Any] | None:
    fires = list(state.book.fires.values()) + list(state.book.withdrawn.values())[-3:]
    return c.pick(fires) if fires else None


def _outcome(c: Chooser, fire: dict[str, Any] | None, now: int) -> list[Any]:
    if fire is None:
        return Outcome("x:1", 1, "succeeded", 200, now, now).to_list()
    status = c.pick(STATUSES)
    attempt = max(1, fire["attempt"] - c.integer(0, 1))
    report = {"items_processed": c.integer(0, 9)} if c.integer(0, 3) == 0 else {}
    return Outcome(fire["fire_id"], attempt, status, 200 if status == "succeeded" else 500, now - 50, now,
                   error="replaced: by another" if status == "skipped" else "", retry_after_ms=c.pick((0, 4000)),
                   bytes_sent=c.integer(0, 100), report=report).to_list()


def _assign(state: Any, c: Chooser, now: int) -> Command:
    due = [(j, job["next_fire_ms"]) for j, job in state.jobs.items() if job["next_fire_ms"] is not None]
    items = [[*c.pick(due), c.pick(NODES)] for _ in range(c.integer(0, 3))] if due else []
    if c.integer(0, 5) == 0:  # a stale or garbled item
        items.append([c.pick(JOB_IDS), (now // 1000 + c.integer(-2, 4)) * 1000, c.pick(NODES)])
    reassign, release = [], []
    for _ in range(c.integer(0, 2)):
        fire = _fire(state, c)
        if fire is not None and c.integer(0, 1):
            reassign.append([fire["fire_id"], fire["attempt"], c.pick(NODES)])
        elif fire is not None:
            release.append([fire["fire_id"], fire["attempt"], c.pick(NODES), fire["node"]])
    return AssignFires(now, items, reassign=reassign, release=release, leader_id="node1")


def _complete(state: Any, c: Chooser, now: int) -> Command:
    node = c.pick(NODES[:3]) if c.integer(0, 9) else "node9"
    fires = [f for f in state.book.fires.values() if f["node"] == node] or [_fire(state, c)]
    return CompleteFires(now, node, [_outcome(c, c.pick(fires), now) for _ in range(c.integer(1, 3))])


def _job_commands(state: Any, c: Chooser, now: int) -> Command:
    job_id = c.pick(JOB_IDS)
    job = state.jobs.get(job_id)
    known = list(state.jobs)
    kind = c.integer(0, 6)
    if kind == 0:
        return CreateJob(now, spec(c, job_id, known), idempotency_key=c.pick(("", "k1", "k2")), team=c.pick(TEAMS))
    if kind == 1:
        specs: list[Any] = [spec(c, c.pick(JOB_IDS)) for _ in range(c.integer(1, 2))]
        return CreateJobs(now, specs + ([{"id": 7}] if c.integer(0, 3) == 0 else []), team=c.pick(TEAMS))
    if kind == 2:
        return ReplaceJob(now, spec(c, job_id, known), if_version=c.pick((0, job["version"] if job else 1)))
    if kind == 3:
        return DeleteJob(now, job_id, force=c.integer(0, 1) == 1)
    if kind == 4:
        return TriggerJob(now, job_id, params=c.pick(({}, {"p": 1})), force=c.integer(0, 1) == 1,
                          correlation_id=c.pick(("", "c")))
    if kind == 5:
        start_ms = now - c.integer(0, 10_000)
        return BackfillJob(now, job_id, start_ms, start_ms + c.integer(-1000, 8_000))
    return RegisterJobs(now, "svc", [{"name": n, "schedule": "@every 4s", "callback_url": "http://127.0.0.1/r"}
                                     for n in ("x", "y")[:c.integer(0, 2)]], team=c.pick(TEAMS))


def _other_commands(state: Any, c: Chooser, now: int) -> Command:
    letters = list(state.dead_letters)
    makers: list[Callable[[], Command]] = [
        lambda: ReplayDeadLetter(now, c.pick(letters) if letters else "nope"),
        lambda: DropDeadLetter(now, c.pick(letters) if letters else "nope"),
        lambda: DrainNode(now, c.pick(NODES), [[f["fire_id"], f["attempt"]] for f in state.book.fires.values()][:2]),
        lambda: RegisterNode(now, c.pick(NODES), f"127.0.0.1:99{c.integer(0, 9)}", "h"),
        lambda: SetQuotas(now, c.pick(TEAMS[1:]), {"fires_per_minute": c.pick((2, 50, None))}, actor=ADMIN),
        lambda: SetDefaultQuotas(now, {"max_jobs": c.pick((3, 100)), "fires_per_minute": c.pick((5, 600)),
                                       "concurrent_webhooks": 10, "api_rps": 50}),
        lambda: SetLimits(now, {"history_per_job": c.pick((3, 100)), "recent_executions": c.pick((5, 1000)),
                                "misfire_grace_ms": c.pick((2_000, 10_000)), "catch_up_window_ms": 60_000,
                                "idempotency_ttl_ms": c.pick((1_000, 86_400_000)), "slot_jobs_max": c.pick((1, 50))}),
        lambda: CreateApiKey(now, f"{c.integer(0, 3):012x}", f"{c.integer(0, 3):064x}", c.pick(TEAMS[1:]),
                             "operator", actor=ADMIN),
        lambda: RevokeApiKey(now, f"{c.integer(0, 3):012x}", actor=ADMIN),
        lambda: PutSecret(now, c.pick(TEAMS[1:]), c.pick(("s1", "s2")), b"sealed", actor=ADMIN),
        lambda: DeleteSecret(now, c.pick(TEAMS[1:]), c.pick(("s1", "s2")), actor=ADMIN),
    ]
    return c.pick(makers)()


def next_command(state: Any, c: Chooser, now: int) -> Command:
    kind = c.integer(0, 9)
    if kind <= 2:
        return _assign(state, c, now)
    if kind <= 4:
        return _complete(state, c, now)
    if kind <= 7:
        return _job_commands(state, c, now)
    return _other_commands(state, c, now)


def run(state: Any, c: Chooser, steps: int, after_each: Callable[[Any, Command, dict[str, Any]], None]) -> None:
    """Apply `steps` commands, each at a time that mostly moves forward; after_each sees each result."""
    start(state)
    now = T0
    for _ in range(steps):
        now += c.pick((-500, 0, 100, 700, 1000, 2500, 30_000))
        command = next_command(state, c, now)
        after_each(state, command, state.apply(command))
