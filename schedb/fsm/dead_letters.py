"""The dead-letter queue inside the replicated state: fires that will not be tried again.

A fire goes here when its attempts are used up (schedb.fsm.complete), when an at-most-once
fire's executor was lost (schedb.fsm.assign), or when a one-shot occurrence was throttled.
An operator replays a dead letter (a new pending fire with the job's full retry budget, its
attempt numbers counting on) or drops it. Bounded: the oldest letters go first.
"""

from __future__ import annotations

from typing import Any

from schedb.commands import DropDeadLetter, ReplayDeadLetter
from schedb.fsm import tenancy, workflow
from schedb.fsm.core import State
from schedb.fsm.fires import PENDING
from schedb.fsm.history import ERROR_LEN_MAX
from schedb.fsm.model import DeadLetter, Fire, Result, StepStatus, Trigger


def dead_letter(state: State, fire_id: str, job_id: str, scheduled_ms: int, attempts: int, status: str,
                http_status: int, error: str) -> None:
    state.dead_letters[fire_id] = {
        "fire_id": fire_id, "job_id": job_id, "scheduled_ms": scheduled_ms, "attempts": attempts,
        "last_status": str(status), "last_http_status": http_status, "last_error": str(error)[:ERROR_LEN_MAX],
        "dead_ms": state.now_ms,
    }
    while len(state.dead_letters) > state.limits.dead_letters_max:
        del state.dead_letters[next(iter(state.dead_letters))]
        state.counters["dead_letters_evicted"] += 1
    state.counters["dead_lettered"] += 1


def at_most_once(state: State, fire: Fire) -> bool:
    """The fire's job forbids a second attempt once one may have been delivered."""
    return state.jobs[fire["job_id"]]["spec"]["delivery"] == "at_most_once"


def bury(state: State, fire: Fire, status: str, http_status: int, error: str) -> None:
    """Move a fire that will not be tried again to the dead-letter queue."""
    dead_letter(state, fire["fire_id"], fire["job_id"], fire["scheduled_ms"], fire["attempt"], status,
                http_status, error)
    workflow.end_fire(state, fire["fire_id"], StepStatus.FAILED)


def _letter(state: State, fire_id: Any, actor: dict[str, Any]) -> DeadLetter | None:
    """A dead letter the actor may see: another team's does not exist for it."""
    letter = state.dead_letters.get(fire_id) if isinstance(fire_id, str) else None
    return letter if letter is not None and tenancy.can_touch(actor, state.jobs[letter["job_id"]]) else None


def replay_dead_letter(state: State, cmd: ReplayDeadLetter) -> Result:
    letter = _letter(state, cmd.fire_id, cmd.actor)
    if letter is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    if cmd.fire_id in state.book.fires:
        return {"error": "conflict", "detail": f"fire {cmd.fire_id!r} is active"}
    team = state.jobs[letter["job_id"]]["team"]
    if not tenancy.take_fires(state, team, 1, state.now_ms):
        return tenancy.over_quota(state, team, "fires_per_minute", "the replay was not run")
    del state.dead_letters[cmd.fire_id]
    # A replay gets the job's full retry budget again; attempt numbers keep counting up.
    workflow.new_fire(state, letter["job_id"], letter["scheduled_ms"], PENDING, trigger=Trigger.REPLAY,
                      attempt=letter["attempts"] + 1, correlation_id=cmd.correlation_id)
    state.counters["replayed"] += 1
    return {"ok": True, "fire_id": cmd.fire_id}


def drop_dead_letter(state: State, cmd: DropDeadLetter) -> Result:
    if _letter(state, cmd.fire_id, cmd.actor) is None:
        return {"error": "not_found", "detail": f"no dead letter {cmd.fire_id!r}"}
    del state.dead_letters[cmd.fire_id]
    return {"ok": True}
