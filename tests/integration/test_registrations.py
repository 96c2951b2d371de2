"""Service-registered jobs against real nodes: disabled until enabled, the operator's override
kept across re-registration, a manual run refused while one is in progress, and its history."""

from __future__ import annotations

from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from tests.integration.workload import wait_for

pytestmark = pytest.mark.integration


def registration(receiver: Receiver, default: str, names: tuple[str, ...] = ("sync", "cleanup")) -> dict[str, Any]:
    return {"service": "inventory", "jobs": [
        {"name": name, "schedule": default, "description": f"{name} the stock",
         "callback_url": receiver.url + "?hang=2", "parameters_schema": {"type": "object"}} for name in names]}


def test_a_registered_job_is_run_by_its_operator(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[0].url
    code, _, result = http("POST", url + "/api/v1/registrations", registration(receiver, "0 2 * * *"))
    assert code == 200 and [j["registered"] for j in result["jobs"]] == [True, True]
    job = http("GET", url + "/api/v1/jobs/inventory.sync")[2]
    assert job["paused"] is True and job["next_fire_at"] is None  # disabled until an operator enables it
    assert job["registration"]["description"] == "sync the stock"
    assert http("POST", url + "/api/v1/jobs/inventory.sync/resume")[0] == 200
    assert http("PATCH", url + "/api/v1/jobs/inventory.sync", {"schedule": "0 5 * * *"})[0] == 200
    code, _, result = http("POST", url + "/api/v1/registrations", registration(receiver, "0 3 * * *", ("sync",)))
    assert code == 200 and result["orphaned"] == ["inventory.cleanup"]
    job = http("GET", url + "/api/v1/jobs/inventory.sync")[2]
    assert job["paused"] is False and job["schedule"] == "0 5 * * *"  # the operator's choices stay
    assert job["registration"]["default_schedule"] == "0 3 * * *"
    assert job["registration"]["schedule_override"] == "0 5 * * *"
    assert http("GET", url + "/api/v1/jobs/inventory.cleanup")[2]["registration"]["orphaned"] is True

    trigger = url + "/api/v1/jobs/inventory.sync/trigger"
    assert http("POST", trigger, {"params": {"sku": "A-1"}})[0] == 202
    code, _, problem = http("POST", trigger)
    assert code == 409 and "in progress" in problem["detail"]
    assert http("POST", trigger, {"force": True})[0] == 202
    runs = wait_for(lambda: (rows := http("GET", url + "/api/v1/jobs/inventory.sync/executions")[2]["executions"])
                    and len(rows) == 2 and rows, 15, "both manual runs")
    assert {r["triggered_by"] for r in runs} == {"manual:api"} and {r["status"] for r in runs} == {"succeeded"}
    code, _, stats = http("GET", url + "/api/v1/jobs/inventory.sync/stats")
    assert code == 200 and stats["by_status"]["succeeded"] == 2


def test_a_jobs_answer_previews_its_schedule(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[1].url
    body = {"id": "previewed", "schedule": "30 2 * * *", "timezone": "Europe/Berlin", "paused": True,
            "webhook": {"url": receiver.url}}
    assert http("POST", url + "/api/v1/jobs", body)[0] == 201
    assert http("GET", url + "/api/v1/jobs/previewed")[2]["schedule_preview"] is None
    job = http("GET", url + "/api/v1/jobs/previewed?preview=true")[2]
    assert len(job["schedule_preview"]["next"]) == 5 and "02:30" in job["schedule_preview"]["description"]
    code, _, job = http("PATCH", url + "/api/v1/jobs/previewed", {"schedule": "@every 1m30s"})
    assert code == 200 and job["schedule_preview"]["description"] == "Every 1 minute 30 seconds"
