"""Run reports and job statistics (issue 9) against a real cluster and receiver: the receiver
answers the report given in its URL (`?report=`), executions carry it, /stats adds it up."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from tests.integration.workload import wait_for

pytestmark = pytest.mark.integration

REPORT = {"items_processed": 5, "items_succeeded": 4, "items_failed": 1, "message": "batch done"}
CALLED = ("succeeded", "failed", "timed_out")


def _hook(receiver: Receiver, report: Any, extra: str = "") -> str:
    text = report if isinstance(report, str) else json.dumps(report)
    return f"{receiver.url}?report={urllib.parse.quote(text)}{extra}"


def _create(url: str, job_id: str, hook: str, **extra: Any) -> None:
    body = {"id": job_id, "schedule": "@every 1s", "webhook": {"url": hook}, **extra}
    code, _, answer = http("POST", url + "/api/v1/jobs", body)
    assert code == 201, answer


def _executions(url: str, job_id: str) -> list[dict[str, Any]]:
    return http("GET", f"{url}/api/v1/jobs/{job_id}/executions")[2]["executions"]


def _settled(url: str, job_id: str) -> list[dict[str, Any]]:
    """The job's executions once a paused job's last fires (and their retries) have committed."""
    last: list[list[dict[str, Any]]] = [[]]

    def same_twice() -> list[dict[str, Any]] | None:
        rows = _executions(url, job_id)
        stable = rows == last[0]
        last[0] = rows
        return rows if stable else None

    def poll() -> list[dict[str, Any]] | None:
        time.sleep(1.0)
        return same_twice()

    return wait_for(poll, 30, f"the executions of {job_id} to settle")


def _stats(url: str, job_id: str, query: str = "") -> dict[str, Any]:
    code, _, stats = http("GET", f"{url}/api/v1/jobs/{job_id}/stats{query}")
    assert code == 200, stats
    return stats


def _expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    called = [r for r in rows if r["status"] in CALLED]
    reports = [r["report"] for r in rows if r["report"]]
    return {
        "executions": len(rows), "attempts": len(called),
        "success_rate": sum(r["status"] == "succeeded" for r in called) / len(called) if called else None,
        "max": max((r["duration_ms"] for r in called), default=None),
        "items": {k: sum(r.get(f"items_{k}", 0) for r in reports) for k in ("processed", "succeeded", "failed")},
    }


def _check(stats: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    want = _expected(rows)
    assert stats["executions"] == want["executions"] and stats["attempts"] == want["attempts"], stats
    assert stats["success_rate"] == pytest.approx(want["success_rate"]), stats
    assert stats["duration_ms"]["max"] == want["max"], stats
    assert stats["duration_ms"]["p50"] <= stats["duration_ms"]["p95"] <= stats["duration_ms"]["p99"] <= want["max"]
    assert stats["items"] == want["items"], stats
    assert sum(stats["by_status"].values()) == len(rows)


def test_reports_are_stored_and_summed_and_failures_lower_the_success_rate(
        cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[0].url
    jobs = {
        "stats-ok": _hook(receiver, REPORT),
        # attempt 1 of every fire fails (its report counts too), the retry succeeds
        "stats-flaky": _hook(receiver, {"items_failed": 2, "message": "flaky"}, "&fail_attempts=1"),
        "stats-down": _hook(receiver, {"items_failed": 3, "message": "db down"}, "&fail=always"),
    }
    retry = {"max_attempts": 2, "backoff_s": 0.1, "backoff_max_s": 0.2}
    for job_id, hook in jobs.items():
        _create(url, job_id, hook, retry=retry)
    wait_for(lambda: all(sum(r["status"] in CALLED for r in _executions(url, j)) >= 4 for j in jobs), 30,
             "four attempts of each job")
    for job_id in jobs:
        assert http("POST", f"{url}/api/v1/jobs/{job_id}/pause")[0] == 200

    rows = _settled(url, "stats-ok")
    assert rows and all(r["status"] == "succeeded" and r["report"] == REPORT for r in rows)
    stats = _stats(url, "stats-ok")
    _check(stats, rows)
    assert stats["success_rate"] == 1.0 and stats["reports"] == len(rows)
    assert stats["items"] == {"processed": 5 * len(rows), "succeeded": 4 * len(rows), "failed": len(rows)}
    assert stats["last_message"] == "batch done" and stats["window_s"] == 86_400 and not stats["truncated"]

    rows = _settled(url, "stats-flaky")
    stats = _stats(url, "stats-flaky")
    _check(stats, rows)
    assert 0 < stats["success_rate"] < 1 and stats["by_status"]["failed"] >= 2
    assert all(r["report"] == {"items_failed": 2, "message": "flaky"} for r in rows)

    rows = _settled(url, "stats-down")
    stats = _stats(url, "stats-down")
    _check(stats, rows)
    assert stats["success_rate"] == 0.0 and stats["by_status"]["failed"] == len(rows)
    assert stats["items"]["failed"] == 3 * len(rows) and stats["last_message"] == "db down"

    # Every node has the same history, so the same figures (but for the clock-dependent ones).
    for node in cluster.nodes[1:]:
        other = _stats(node.url, "stats-ok")
        assert {k: v for k, v in other.items() if k not in ("from", "to")} == \
            {k: v for k, v in _stats(url, "stats-ok").items() if k not in ("from", "to")}

    time.sleep(1.5)  # a window of one second holds none of the paused job's executions
    stats = _stats(url, "stats-ok", "?window=1")
    assert (stats["executions"], stats["attempts"], stats["success_rate"]) == (0, 0, None)
    assert stats["items"] == {"processed": 0, "succeeded": 0, "failed": 0} and stats["last_message"] is None


def test_a_bad_report_is_ignored_and_the_attempt_stands(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[1].url
    bad = {"items_processed": -1, "items_succeeded": 2.5, "items_failed": "3", "message": "m" * 500, "x": 1}
    _create(url, "stats-bad", _hook(receiver, bad))
    _create(url, "stats-garbage", _hook(receiver, '{"items_processed": 7'))  # not JSON
    rows = wait_for(lambda: [r for r in _executions(url, "stats-bad") if r["status"] == "succeeded"], 20,
                    "an execution of stats-bad")
    assert rows[0]["report"] == {"message": "m" * 200}  # the only field that was fine, cut
    rows = wait_for(lambda: _executions(url, "stats-garbage"), 20, "an execution of stats-garbage")
    assert rows[0]["status"] == "succeeded" and rows[0]["report"] is None
    for job_id in ("stats-bad", "stats-garbage"):
        assert http("POST", f"{url}/api/v1/jobs/{job_id}/pause")[0] == 200


def test_stats_of_an_unknown_job_and_bad_windows(cluster: Cluster) -> None:
    url = cluster.nodes[2].url
    assert http("GET", url + "/api/v1/jobs/no-such-job/stats")[0] == 404
    _create(url, "stats-idle", "http://127.0.0.1:1/never", paused=True)
    stats = _stats(url, "stats-idle", "?window=2592000")
    assert stats["executions"] == 0 and stats["success_rate"] is None and stats["window_s"] == 2_592_000
    for window in ("0", "2592001", "-5", "1.5", "day"):
        code, _, problem = http("GET", f"{url}/api/v1/jobs/stats-idle/stats?window={window}")
        assert code == 400 and problem["errors"][0]["field"] == "window", (window, problem)
