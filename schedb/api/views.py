"""JSON renderings of state records for the API (the state keeps Unix ms; users get RFC 3339)."""

from __future__ import annotations

from typing import Any

from schedb.fsm.job_list import next_fire_ms
from schedb.timefmt import ms_to_rfc3339

SECRET_MASK = "********"


def time_or_none(ms: int | None) -> str | None:
    return None if ms is None else ms_to_rfc3339(ms)


def job_view(job: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The job as users see it."""
    view = dict(job["spec"])
    view.setdefault("breaker", None)  # stored only when set (schedb.jobspec)
    if view["webhook"].get("signing_secret"):
        view["webhook"] = {**view["webhook"], "signing_secret": SECRET_MASK}  # never shown
    view.update({
        "next_fire_at": time_or_none(next_fire_ms(job, now_ms)),
        "created_at": time_or_none(job["created_ms"]),
        "updated_at": time_or_none(job["updated_ms"]),
        "version": job["version"],
        "team": job["team"],
        # a service's job: its declared default, description, parameters schema, override, orphaned
        "registration": dict(job["registration"]) if job.get("registration") else None,
    })
    return view


def execution_view(execution: dict[str, Any]) -> dict[str, Any]:
    return {
        "fire_id": execution["fire_id"],
        "job_id": execution["job_id"],
        "scheduled_at": time_or_none(execution["scheduled_ms"]),
        "attempt": execution["attempt"],
        "node": execution["node"],
        "status": execution["status"],
        "http_status": execution["http_status"] or None,
        "started_at": time_or_none(execution["started_ms"]),
        "finished_at": time_or_none(execution["finished_ms"]),
        "duration_ms": execution["duration_ms"],
        "error": execution["error"] or None,
        "committed_at": time_or_none(execution["committed_ms"]),
        "trigger": execution.get("trigger", "schedule").split(":", 1)[0],
        # schedule, manual:<key id>, dependency:<run id>, backfill or replay
        "triggered_by": execution.get("trigger", "schedule"),
        "reason": execution.get("reason") or None,
        "report": execution.get("report") or None,
    }


def etag(version: int) -> str:
    return f'"{version}"'
