"""The HTTP API and CLI against a real three-node cluster (acceptance 1, 2 and 5 of issue 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from devkit.devcluster import free_port, http
from devkit.harness import Cluster
from tests.integration.workload import wait_for

JOB = {"schedule": "0 0 1 1 *", "webhook": {"url": "http://127.0.0.1:1/never"}}


def test_one_leader_two_followers(cluster: Cluster) -> None:
    roles = sorted(cluster.status(n)["role"] for n in cluster.nodes)
    assert roles == ["follower", "follower", "leader"]
    leader = cluster.leader()
    for node in cluster.nodes:
        status = cluster.status(node)
        assert status["leader"]["node_id"] == leader.node_id
        assert {m["node_id"] for m in status["members"]} == {"node1", "node2", "node3"}


def test_job_created_on_follower_is_readable_everywhere_within_a_second(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    code, headers, job = http("POST", follower.url + "/api/v1/jobs", {"id": "from-follower", **JOB})
    assert code == 201, job
    assert headers["Location"] == "/api/v1/jobs/from-follower"
    assert job["version"] == 1 and job["next_fire_at"].endswith(":00:00.000Z")
    deadline = time.monotonic() + 1.0
    seen: set[str] = set()
    while len(seen) < 3 and time.monotonic() < deadline:
        for node in cluster.nodes:
            if http("GET", f"{node.url}/api/v1/jobs/from-follower")[0] == 200:
                seen.add(node.node_id)
        time.sleep(0.02)
    assert seen == {"node1", "node2", "node3"}


def test_cli_adds_lists_shows_and_removes(cluster: Cluster) -> None:
    url = cluster.nodes[2].url

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "schedb", *args, "--url", url],
                              capture_output=True, text=True, timeout=30)

    added = cli("jobs", "add", "--id", "via-cli", "--schedule", "@every 1h", "--webhook",
                "http://127.0.0.1:1/x", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["schedule"] == "@every 1h"
    assert "via-cli" in cli("jobs", "ls").stdout
    assert cli("jobs", "pause", "via-cli", "--json").returncode == 0
    shown = json.loads(cli("jobs", "show", "via-cli", "--json").stdout)
    assert shown["job"]["paused"] is True and shown["job"]["next_fire_at"] is None
    assert "leader" in cli("cluster", "status").stdout
    assert cli("jobs", "trigger", "via-cli").stdout.startswith("triggered via-cli:")
    assert cli("jobs", "rm", "via-cli").returncode == 0
    missing = cli("jobs", "show", "via-cli")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_cli_reports_a_node_that_is_down() -> None:
    result = subprocess.run([sys.executable, "-m", "schedb", "jobs", "ls", "--url", "http://127.0.0.1:1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot reach" in result.stderr


BAD_INPUTS = [
    ({**JOB, "schedule": "61 * * * *"}, "schedule"),
    ({**JOB, "schedule": "@every 0s"}, "schedule"),
    ({**JOB, "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({**JOB, "webhook": {"url": "ftp://127.0.0.1/x"}}, "webhook.url"),
    ({**JOB, "webhook": {"url": "file:///etc/passwd"}}, "webhook.url"),
    ({**JOB, "webhook": {"url": "http://127.0.0.1/x", "timeout_s": "10"}}, "webhook.timeout_s"),
    ({**JOB, "schedule": 5}, "schedule"),
    ({**JOB, "paused": "yes"}, "paused"),
    ({**JOB, "retry": {"max_attempts": 1.5}}, "retry.max_attempts"),
    ({**JOB, "colour": "blue"}, "colour"),
    ({**JOB, "webhook": {"url": "http://127.0.0.1/x", "verb": "POST"}}, "webhook.verb"),
    ({**JOB, "webhook": {"url": "http://127.0.0.1/x", "headers": {"X-Schedb-Node": "me"}}},
     "webhook.headers.X-Schedb-Node"),
    ({**JOB, "webhook": {"url": "http://127.0.0.1/x", "headers": {"X-A": "a\r\nX-B: b"}}}, "webhook.headers.X-A"),
    ({**JOB, "id": "ünïcode-id"}, "id"),
    ({**JOB, "id": "a" * 200}, "id"),
    ({"webhook": {"url": "http://127.0.0.1/x"}}, "schedule"),
    ({"schedule": "@hourly"}, "webhook"),
    ({**JOB, "schedule": "@at 2001-01-01T00:00:00Z"}, "schedule"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
def test_invalid_job_is_a_problem_naming_the_field(cluster: Cluster, body: dict, field: str) -> None:
    before = http("GET", cluster.nodes[0].url + "/api/v1/jobs?limit=1000")[2]["jobs"]
    code, headers, problem = http("POST", cluster.nodes[1].url + "/api/v1/jobs", body)
    assert code == 422, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert field in [e["field"] for e in problem["errors"]]
    assert http("GET", cluster.nodes[0].url + "/api/v1/jobs?limit=1000")[2]["jobs"] == before


def test_malformed_and_oversized_bodies(cluster: Cluster) -> None:
    url = cluster.nodes[0].url + "/api/v1/jobs"
    code, headers, problem = http("POST", url, raw=b'{"schedule": ')
    assert code == 400 and problem["title"] == "Invalid JSON"
    code, _, problem = http("POST", url, raw=json.dumps([1, 2]).encode())
    assert code == 422 and problem["errors"][0]["field"] == ""
    huge = json.dumps({**JOB, "id": "huge", "tags": {"pad": "x" * (1024 * 1024)}}).encode()
    code, headers, problem = http("POST", url, raw=huge)
    assert code == 413 and headers["Content-Type"].startswith("application/problem+json")
    assert http("GET", cluster.nodes[0].url + "/api/v1/jobs/huge")[0] == 404


def test_duplicate_id_conflict_and_unknown_job(cluster: Cluster) -> None:
    url = cluster.nodes[0].url
    assert http("POST", url + "/api/v1/jobs", {"id": "dup", **JOB})[0] == 201
    code, _, problem = http("POST", cluster.nodes[2].url + "/api/v1/jobs", {"id": "dup", **JOB})
    assert code == 409 and "already exists" in problem["detail"]
    assert http("GET", url + "/api/v1/jobs/nope")[0] == 404
    assert http("DELETE", url + "/api/v1/jobs/nope")[0] == 404
    assert http("GET", url + "/api/v1/jobs/nope/executions")[0] == 404


def test_bulk_create_validates_everything_first_and_reports_each_job(cluster: Cluster) -> None:
    url = cluster.nodes[1].url
    assert http("POST", url + "/api/v1/jobs", {"id": "bulk-taken", **JOB})[0] == 201
    code, _, problem = http("POST", url + "/api/v1/jobs/bulk", {"jobs": [{"id": "bulk-x", **JOB},
                                                                         {**JOB, "schedule": "61 * * * *"}]})
    assert code == 422 and problem["errors"][0]["field"] == "jobs[1].schedule"
    assert http("GET", url + "/api/v1/jobs/bulk-x")[0] == 404, "an invalid batch created something"
    for body in ({"jobs": []}, {"jobs": [JOB] * 1001}, {"jobs": [JOB], "extra": 1}, [JOB]):
        assert http("POST", url + "/api/v1/jobs/bulk", body)[2]["errors"][0]["field"] == "jobs"
    jobs = [{"id": f"bulk-{i}", **JOB} for i in range(500)] + [{"id": "bulk-taken", **JOB}]
    code, _, result = http("POST", url + "/api/v1/jobs/bulk", {"jobs": jobs})
    assert code == 200 and (result["created"], result["failed"]) == (500, 1)
    assert result["items"][-1] == {"id": "bulk-taken", "status": 409, "detail": "job 'bulk-taken' already exists"}
    assert http("GET", url + "/api/v1/jobs/bulk-499")[0] == 200  # applied on the node that answered
    # and on the others once the commit reaches them (they may be a moment behind)
    wait_for(lambda: http("GET", cluster.nodes[2].url + "/api/v1/jobs/bulk-499")[0] == 200, 5, "bulk-499 on node3")


def test_membership_changes_refuse_bad_input_and_change_nothing(cluster: Cluster) -> None:
    url = cluster.nodes[2].url + "/api/v1/cluster/members"  # any node: followers forward to the leader
    for body in ({"raft_addr": "nope"}, {"raft_addr": 9004}, {"raft_addr": "127.0.0.1:9004", "x": 1}, [],
                 {"raft_addr": f"127.0.0.1:{free_port()}"}):  # the last: nothing listens there
        code, _, problem = http("POST", url, body)
        assert code == 422 and problem["errors"][0]["field"] == "raft_addr", (body, problem)
    assert http("POST", url, {"raft_addr": f"127.0.0.1:{cluster.nodes[0].raft_port}"})[0] == 409
    assert http("DELETE", url + "/no-such-node")[0] == 404
    assert len(cluster.status(cluster.nodes[0])["members"]) == 3


def test_updates_honour_if_match(cluster: Cluster) -> None:
    url = cluster.nodes[1].url + "/api/v1/jobs/versioned"
    assert http("PUT", url, JOB)[0] == 404
    assert http("POST", cluster.nodes[1].url + "/api/v1/jobs", {"id": "versioned", **JOB})[0] == 201
    code, headers, job = http("PATCH", url, {"tags": {"team": "a"}}, {"If-Match": '"1"'})
    assert code == 200 and job["version"] == 2 and headers["ETag"] == '"2"' and job["tags"] == {"team": "a"}
    code, _, problem = http("PUT", url, {**JOB, "tags": {}}, {"If-Match": '"1"'})
    assert code == 412, problem
    code, _, job = http("PUT", url, {**JOB, "schedule": "@every 1h"}, {"If-Match": '"2"'})
    assert code == 200 and job["schedule"] == "@every 1h" and job["tags"] == {}
    assert http("DELETE", url, headers={"If-Match": '"2"'})[0] == 412
    assert http("DELETE", url, headers={"If-Match": '"3"'})[0] == 204
    assert http("GET", url)[0] == 404


def test_list_paginates_and_filters(cluster: Cluster) -> None:
    url = cluster.nodes[0].url + "/api/v1/jobs"
    for i in range(5):
        body = {"id": f"page-{i}", **JOB, "tags": {"group": "odd" if i % 2 else "even"}}
        assert http("POST", url, body)[0] == 201
    first = http("GET", url + "?limit=2&after=page-")[2]
    assert [j["id"] for j in first["jobs"]] == ["page-0", "page-1"] and first["next_after"] == "page-1"
    odd = http("GET", url + "?tag=group:odd&limit=1000")[2]["jobs"]
    assert [j["id"] for j in odd] == ["page-1", "page-3"]
    assert http("GET", url + "?limit=0")[0] == 400
    assert http("GET", url + "?limit=abc")[0] == 400


def test_health_and_ready(cluster: Cluster) -> None:
    for node in cluster.nodes:
        assert http("GET", node.url + "/health")[0] == 200
        code, _, body = http("GET", node.url + "/ready")
        assert code == 200 and body["checks"] == {"caught_up": True, "has_leader": True, "registered": True,
                                                  "executor_running": True, "clock_in_bound": True,
                                                  "leader_time_current": True}
        assert abs(body["clock_offset_from_leader_ms"]) <= 500 and "reason" not in body


def test_openapi_describes_every_route_and_the_job_fields(cluster: Cluster) -> None:
    from schedb.api.app import ROUTES
    from schedb.jobspec import TOP_FIELDS, WEBHOOK_FIELDS

    code, _, doc = http("GET", cluster.nodes[0].url + "/api/v1/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.")
    served = {(path, method.lower()) for method, path, _, _ in ROUTES}
    described = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    assert served == described
    job = doc["components"]["schemas"]["JobInput"]["properties"]
    assert set(job) == set(TOP_FIELDS) and set(job["webhook"]["properties"]) == set(WEBHOOK_FIELDS)
