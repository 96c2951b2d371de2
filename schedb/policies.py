"""What an executor does with a fire when its time comes: fire it, or skip it.

A pure function of the replicated state and the executor's clock, so every
decision rests on what all nodes agree on (which fires of the job are active,
which are due), and is then committed as the fire's outcome:

- misfire: a scheduled fire that no attempt has reported on yet and that is
  later than the grace (its executor was down or stopped, say) follows the
  job's misfire policy like an unassigned late occurrence would: `skip` skips it, `run_once` skips it when a newer
  occurrence of the job is also due (that one fires), `run_all` fires it;
- concurrency: with `forbid`, a fire is skipped while an earlier fire of the
  same job is due and has no committed outcome (it runs somewhere, on any
  node); with `replace`, the earlier ones are cancelled and this one fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schedb.fsm.core import State
from schedb.fsm.fires import fire_id_of


@dataclass(frozen=True)
class Verdict:
    fire: bool
    status: str = ""  # for a skip: "missed" or "skipped"
    reason: str = ""  # missed | skipped_overlap
    detail: str = ""
    replaces: tuple[str, ...] = ()  # earlier fires to cancel (concurrency: replace)


FIRE = Verdict(True)


def verdict(state: State, fire: dict[str, Any], now_ms: int, grace_ms: int) -> Verdict | None:
    """None when the job is gone."""
    job = state.jobs.get(fire["job_id"])
    if job is None:
        return None
    spec = job["spec"]
    due = [state.book.fires[fire_id_of(fire["job_id"], ms)] for ms in job["active_fires"]]
    due = [f for f in due if f["fire_id"] != fire["fire_id"] and f["due_ms"] <= now_ms and f["node"]]
    if _is_misfire(fire, now_ms, grace_ms):
        newer = any(f["scheduled_ms"] > fire["scheduled_ms"] and f["trigger"] == "schedule" for f in due) or (
            job["next_fire_ms"] is not None and job["next_fire_ms"] <= now_ms)  # still in its slot
        if spec["misfire"] == "skip" or (spec["misfire"] == "run_once" and newer):
            late_ms = now_ms - fire["scheduled_ms"]
            return Verdict(False, "missed", "missed", f"due {late_ms} ms ago; misfire {spec['misfire']}")
    older = tuple(f["fire_id"] for f in due if f["scheduled_ms"] < fire["scheduled_ms"])
    if older and spec["concurrency"] == "forbid":
        return Verdict(False, "skipped", "skipped_overlap", f"{older[0]} still running")
    if older and spec["concurrency"] == "replace":
        return Verdict(True, replaces=older)
    return FIRE


def newer_fire_due(state: State, fire: dict[str, Any], now_ms: int) -> str:
    """For a running fire of a `replace` job: the id of a newer fire that is due, or ""."""
    job = state.jobs.get(fire["job_id"])
    if job is None or job["spec"]["concurrency"] != "replace":
        return ""
    for ms in job["active_fires"]:
        other = state.book.fires[fire_id_of(fire["job_id"], ms)]
        if ms > fire["scheduled_ms"] and other["due_ms"] <= now_ms and other["node"]:
            return other["fire_id"]
    return ""


def _is_misfire(fire: dict[str, Any], now_ms: int, grace_ms: int) -> bool:
    """A scheduled fire that no attempt has reported on yet (first try, or moved from an
    executor that died or was stopped) and that is late beyond the grace."""
    return fire["trigger"] == "schedule" and not fire["reported"] and now_ms - fire["scheduled_ms"] > grace_ms
