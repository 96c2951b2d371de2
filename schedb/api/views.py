"""JSON renderings of state records for the API (the state keeps Unix ms; users get RFC 3339)."""

from __future__ import annotations

from typing import Any

from schedb.timefmt import ms_to_rfc3339


def _time(ms: int | None) -> str | None:
    return None if ms is None else ms_to_rfc3339(ms)


def job_view(job: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The job as users see it; next_fire_at counts fires already handed to an executor."""
    upcoming = [ms for ms in job["active_fires"] if ms >= now_ms]
    if job["next_fire_ms"] is not None:
        upcoming.append(job["next_fire_ms"])
    view = dict(job["spec"])
    view.update({
        "next_fire_at": _time(min(upcoming)) if upcoming else None,
        "created_at": _time(job["created_ms"]),
        "updated_at": _time(job["updated_ms"]),
        "version": job["version"],
    })
    return view


def execution_view(execution: dict[str, Any]) -> dict[str, Any]:
    return {
        "fire_id": execution["fire_id"],
        "job_id": execution["job_id"],
        "scheduled_at": _time(execution["scheduled_ms"]),
        "attempt": execution["attempt"],
        "node": execution["node"],
        "status": execution["status"],
        "http_status": execution["http_status"] or None,
        "started_at": _time(execution["started_ms"]),
        "finished_at": _time(execution["finished_ms"]),
        "duration_ms": execution["duration_ms"],
        "error": execution["error"] or None,
        "committed_at": _time(execution["committed_ms"]),
    }


def etag(version: int) -> str:
    return f'"{version}"'
