"""Retries, dead letters, timeouts, controls and idempotent creates against a real cluster
and a receiver told (through the webhook URL) to fail or hang."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.fsm.occurrences import WITHDRAW_SLACK_MS
from schedb.timefmt import ms_to_rfc3339, rfc3339_to_ms
from tests.integration.workload import wait_for


def _one_shot(job_id: str, url: str, in_s: float = 1.5, **extra: Any) -> dict[str, Any]:
    at = ms_to_rfc3339(int((time.time() + in_s) * 1000))
    return {"id": job_id, "schedule": f"@at {at}", "webhook": {"url": url, **extra.pop("webhook", {})}, **extra}


def _executions(cluster: Cluster, job_id: str, node: int = 0) -> list[dict[str, Any]]:
    """The job's history on one node; [] while that node has not applied the create yet."""
    code, _, body = http("GET", f"{cluster.nodes[node].url}/api/v1/jobs/{job_id}/executions")
    return body["executions"] if code == 200 else []


def _deliveries(receiver: Receiver, job_id: str) -> list[dict[str, Any]]:
    return [d for d in receiver.deliveries() if d["job_id"] == job_id]


def test_failing_twice_then_succeeding_gives_three_attempts_with_growing_gaps(
        cluster: Cluster, receiver: Receiver) -> None:
    body = _one_shot("retry-3", receiver.url + "?fail_attempts=2",
                     retry={"max_attempts": 3, "backoff_s": 1, "backoff_max_s": 30})
    assert http("POST", cluster.nodes[1].url + "/api/v1/jobs", body)[0] == 201
    rows = wait_for(lambda: len(_executions(cluster, "retry-3", 2)) == 3 and _executions(cluster, "retry-3", 2),
                     20, "three executions")
    assert [(r["attempt"], r["status"]) for r in rows] == [(3, "succeeded"), (2, "failed"), (1, "failed")]
    got = _deliveries(receiver, "retry-3")
    assert [d["attempt"] for d in got] == [1, 2, 3] and len({d["fire_id"] for d in got}) == 1
    gaps = [b["arrival_ms"] - a["arrival_ms"] for a, b in itertools.pairwise(got)]
    assert 700 <= gaps[0] < gaps[1], gaps


def test_exhausted_fire_goes_to_the_dlq_and_replay_delivers_it_again(cluster: Cluster, receiver: Receiver) -> None:
    body = _one_shot("always-fails", receiver.url + "?fail=always",
                     retry={"max_attempts": 2, "backoff_s": 0.2, "backoff_max_s": 1})
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201

    def letters() -> list[dict[str, Any]]:
        return http("GET", cluster.nodes[2].url + "/api/v1/dlq?job_id=always-fails")[2]["dead_letters"]

    (letter,) = wait_for(letters, 20, "a dead letter")
    assert letter["attempts"] == 2 and letter["last_http_status"] == 500 and letter["last_error"] == "HTTP 500"
    code, _, body = http("POST", f"{cluster.nodes[1].url}/api/v1/dlq/{letter['fire_id']}/replay")
    assert code == 202, body
    wait_for(lambda: len(_deliveries(receiver, "always-fails")) >= 4, 20, "replayed deliveries")
    got = _deliveries(receiver, "always-fails")
    assert {d["fire_id"] for d in got} == {letter["fire_id"]}
    assert [d["attempt"] for d in got] == [1, 2, 3, 4]
    (again,) = wait_for(letters, 20, "the replay to fail into the DLQ again")
    assert again["attempts"] == 4
    assert http("DELETE", f"{cluster.nodes[0].url}/api/v1/dlq/{again['fire_id']}")[0] == 204
    wait_for(lambda: letters() == [], 5, "the drop to reach node 3")  # applied on node 1 when it answered
    assert http("POST", f"{cluster.nodes[0].url}/api/v1/dlq/{again['fire_id']}/replay")[0] == 404


def test_a_hanging_receiver_times_out_within_timeout_plus_a_second(cluster: Cluster, receiver: Receiver) -> None:
    body = _one_shot("hangs", receiver.url + "?hang=10", webhook={"timeout_s": 1}, retry={"max_attempts": 1})
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    (row,) = wait_for(lambda: _executions(cluster, "hangs"), 15, "the timed-out execution")
    assert row["status"] == "timed_out" and 1000 <= row["duration_ms"] < 2000, row


def test_retry_after_from_a_429_is_honoured(cluster: Cluster, receiver: Receiver) -> None:
    body = _one_shot("busy", receiver.url + "?status=429&retry_after=3",
                     retry={"max_attempts": 2, "backoff_s": 0.1, "backoff_max_s": 60})
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    wait_for(lambda: len(_deliveries(receiver, "busy")) == 2, 20, "the second attempt")
    first, second = _deliveries(receiver, "busy")
    assert second["arrival_ms"] - first["arrival_ms"] >= 2900


def test_trigger_pause_resume_delete(cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nodes[1].url + "/api/v1/jobs"
    job = {"id": "controlled", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
    assert http("POST", url, job)[0] == 201
    wait_for(lambda: len(_deliveries(receiver, "controlled")) >= 2, 10, "scheduled fires")

    code, _, paused = http("POST", f"{url}/controlled/pause")
    paused_ms = int(time.time() * 1000)
    # A fire due within a second may already run on an executor whose clock is a little ahead: it goes ahead.
    next_at = paused["next_fire_at"]
    assert code == 200 and paused["paused"] is True
    assert next_at is None or rfc3339_to_ms(next_at) <= paused_ms + WITHDRAW_SLACK_MS, next_at
    time.sleep(3.0)
    late = [d for d in _deliveries(receiver, "controlled")
            if int(d["fire_id"].rsplit(":", 1)[1]) > paused_ms + WITHDRAW_SLACK_MS]
    assert late == [], "a fire scheduled after the pause was delivered"

    code, _, triggered = http("POST", f"{url}/controlled/trigger")
    assert code == 202
    wait_for(lambda: any(d["fire_id"] == triggered["fire_id"] for d in _deliveries(receiver, "controlled")),
              10, "the manual fire")
    rows = wait_for(lambda: [r for r in _executions(cluster, "controlled") if r["fire_id"] == triggered["fire_id"]],
                     10, "the manual execution")
    assert rows[0]["trigger"] == "manual"

    assert http("POST", f"{url}/controlled/resume")[2]["paused"] is False
    resumed = len(_deliveries(receiver, "controlled"))
    wait_for(lambda: len(_deliveries(receiver, "controlled")) >= resumed + 2, 10, "fires after resume")

    assert http("DELETE", f"{url}/controlled")[0] == 204
    deleted_ms = int(time.time() * 1000)
    time.sleep(3.0)
    late = [d for d in _deliveries(receiver, "controlled") if int(d["fire_id"].rsplit(":", 1)[1]) > deleted_ms]
    assert late == [], "a fire scheduled after the delete was delivered"
    assert http("POST", f"{url}/controlled/trigger")[0] == 404


def test_repeated_idempotency_key_returns_the_first_job_across_nodes(cluster: Cluster) -> None:
    job = {"schedule": "@yearly", "webhook": {"url": "http://127.0.0.1:1/x"}}
    headers = {"Idempotency-Key": "create-once-1"}
    code, _, first = http("POST", cluster.nodes[0].url + "/api/v1/jobs", {"id": "idem-a", **job}, headers)
    assert code == 201
    code, _, second = http("POST", cluster.nodes[2].url + "/api/v1/jobs", {"id": "idem-b", **job}, headers)
    assert code == 200 and second["id"] == "idem-a" and second["version"] == first["version"]
    assert http("GET", cluster.nodes[1].url + "/api/v1/jobs/idem-b")[0] == 404


def test_forbid_skips_fires_while_the_previous_one_runs(cluster: Cluster, receiver: Receiver) -> None:
    job = {"id": "no-overlap", "schedule": "@every 1s", "concurrency": "forbid", "retry": {"max_attempts": 1},
           "webhook": {"url": receiver.url + "?hang=2.5", "timeout_s": 10}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", job)[0] == 201
    time.sleep(7.0)
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs/no-overlap/pause")[0] == 200
    rows = wait_for(lambda: [r for r in _executions(cluster, "no-overlap") if r["status"] == "skipped"],
                     10, "skipped executions")
    assert all(r["reason"] == "skipped_overlap" for r in rows)
    got = sorted(d["arrival_ms"] for d in _deliveries(receiver, "no-overlap"))
    assert all(b - a >= 2400 for a, b in itertools.pairwise(got)), f"overlapping deliveries: {got}"


def test_replace_cancels_the_running_request(cluster: Cluster, receiver: Receiver) -> None:
    job = {"id": "replacing", "schedule": "@every 1s", "concurrency": "replace", "retry": {"max_attempts": 1},
           "webhook": {"url": receiver.url + "?hang=5", "timeout_s": 10}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", job)[0] == 201
    rows = wait_for(lambda: [r for r in _executions(cluster, "replacing") if r["reason"] == "replaced"][2:],
                     15, "three replaced executions")
    assert all(r["status"] == "skipped" and r["duration_ms"] < 2000 for r in rows)
    assert http("DELETE", cluster.nodes[0].url + "/api/v1/jobs/replacing")[0] == 204


def test_backfill_of_ten_minutes_delivers_ten_fires_with_their_historical_times(
        cluster: Cluster, receiver: Receiver) -> None:
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs",
                {"id": "backfilled", "schedule": "*/1 * * * *", "webhook": {"url": receiver.url}})[0] == 201
    end_ms = int(time.time() * 1000) // 60_000 * 60_000 - 1
    body = {"start": ms_to_rfc3339(end_ms - 600_000 + 1), "end": ms_to_rfc3339(end_ms)}
    code, _, result = http("POST", cluster.nodes[1].url + "/api/v1/jobs/backfilled/backfill", body)
    assert code == 202 and result["fires"] == 10, result
    got = wait_for(lambda: len(_deliveries(receiver, "backfilled")) >= 10 and _deliveries(receiver, "backfilled"),
                    15, "ten backfilled deliveries")
    scheduled = sorted(int(d["fire_id"].rsplit(":", 1)[1]) for d in got)
    assert scheduled == list(range(end_ms + 1 - 600_000, end_ms + 1, 60_000))
    assert len(got) == 10
    code, _, problem = http("POST", cluster.nodes[1].url + "/api/v1/jobs/backfilled/backfill",
                            {"start": body["end"], "end": "tomorrow"})
    assert code == 422 and problem["errors"][0]["field"] == "end"


def test_signed_webhook_and_the_secret_is_never_shown(cluster: Cluster, receiver: Receiver) -> None:
    secret = "a-long-enough-signing-secret"
    body = _one_shot("signed", receiver.url, webhook={"signing_secret": secret})
    code, _, job = http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)
    assert code == 201 and job["webhook"]["signing_secret"] == "********"
    (got,) = wait_for(lambda: _deliveries(receiver, "signed"), 10, "the signed delivery")
    t, v1 = dict(part.split("=", 1) for part in got["signature"].split(",")).values()
    expected = hmac.new(secret.encode(), f"{t}.{got['body']}".encode(), hashlib.sha256).hexdigest()
    assert v1 == expected
    # A definition read back and sent again keeps the secret it cannot see.
    job.pop("next_fire_at"), job.pop("created_at"), job.pop("updated_at"), job.pop("version")
    job["schedule"] = "@yearly"
    code, _, replaced = http("PUT", cluster.nodes[1].url + "/api/v1/jobs/signed", job)
    assert code == 200 and replaced["webhook"]["signing_secret"] == "********"
    code, _, problem = http("PUT", cluster.nodes[1].url + "/api/v1/jobs/signed",
                            {**job, "webhook": {**job["webhook"], "signing_secret": "short"}})
    assert code == 422 and problem["errors"][0]["field"] == "webhook.signing_secret"


def test_correlation_id_follows_a_trigger_into_the_logs_and_the_webhook(
        cluster: Cluster, receiver: Receiver) -> None:
    body = {"id": "correlated", "schedule": "@yearly", "webhook": {"url": receiver.url}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    code, headers, result = http("POST", cluster.nodes[1].url + "/api/v1/jobs/correlated/trigger",
                                 headers={"X-Correlation-ID": "abc-123"})
    assert code == 202 and headers["X-Correlation-ID"] == "abc-123"
    (got,) = wait_for(lambda: _deliveries(receiver, "correlated"), 10, "the triggered delivery")
    assert got["correlation_id"] == "abc-123"
    executor = next(n for n in cluster.nodes if n.node_id == got["node"])

    def logged(node: Any, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in node.log.read_text().splitlines() if line.startswith("{")]
        return [e for e in lines if e.get("event") == event and e.get("correlation_id") == "abc-123"]

    served = wait_for(lambda: logged(cluster.nodes[1], "fire_triggered"), 5, "the API node's log line")
    assert served[0]["fire_id"] == result["fire_id"] and served[0]["node"] == cluster.nodes[1].node_id
    delivered = wait_for(lambda: logged(executor, "fire_delivered"), 5, "the executor's log line")
    assert delivered[0]["fire_id"] == result["fire_id"] and delivered[0]["job_id"] == "correlated"
    assert http("GET", cluster.nodes[0].url + "/health")[1]["X-Correlation-ID"]  # generated when absent
