"""Issue 8 against a real cluster with auth on: keys, roles and teams; the fire-rate quota;
secrets resolved only at delivery; the egress (SSRF) guard at create and at delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.secretbox import generate_key_text
from tests.integration.conftest import running_cluster
from tests.integration.keys import ADMIN_KEY, call
from tests.integration.workload import assert_every_second, delivered_seconds, scheduled_ms, wait_for

pytestmark = pytest.mark.integration
SECURE = (  # appended after the [raft] keys: frequent snapshots, so the test can grep one
    "compaction_min_entries = 50\ncompaction_min_s = 2.0\n\n"
    f'[auth]\nenabled = true\nadmin_key = "{ADMIN_KEY}"\n\n[secrets]\nkey = "{generate_key_text()}"\n'
)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("secure")), SECURE) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def keys(secure: Cluster) -> dict[str, dict[str, Any]]:
    """Keys of two teams, made by the config's admin key."""
    out = {}
    for label, team, role in (("a_op", "a", "operator"), ("a_view", "a", "viewer"), ("b_op", "b", "operator")):
        status, key = call("POST", secure.nodes[0].url + "/api/v1/keys", ADMIN_KEY,
                           {"team": team, "role": role, "name": label})
        assert status == 201 and key["key"].startswith("sk_"), key
        out[label] = key
    return out


def job(job_id: str, url: str, paused: bool = False, **webhook: Any) -> dict[str, Any]:
    return {"id": job_id, "schedule": "@every 1s", "paused": paused, "webhook": {"url": url, **webhook}}


def test_keys_roles_and_teams(secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url = secure.nodes[0].url
    a_op, a_view, b_op = (keys[k]["key"] for k in ("a_op", "a_view", "b_op"))
    assert call("GET", url + "/api/v1/jobs", None)[0] == 401
    assert call("GET", url + "/api/v1/jobs", "sk_not_a_key")[0] == 401
    assert call("GET", url + "/health", None)[0] == 200
    assert call("POST", url + "/api/v1/jobs", a_view, job("view-made", receiver.url))[0] == 403
    status, created = call("POST", url + "/api/v1/jobs", a_op, job("a-job", receiver.url, paused=True))
    assert status == 201 and created["team"] == "a"
    assert call("GET", url + "/api/v1/jobs/a-job", a_view)[0] == 200  # a viewer of the team reads it
    assert call("GET", url + "/api/v1/jobs/a-job/stats", a_view)[0] == 200
    for method, path, body in (("GET", "", None), ("PATCH", "", {"paused": False}), ("DELETE", "", None),
                               ("POST", "/trigger", None), ("GET", "/executions", None), ("GET", "/stats", None)):
        assert call(method, f"{url}/api/v1/jobs/a-job{path}", b_op, body)[0] == 404, (method, path)
    assert call("GET", url + "/api/v1/jobs", b_op)[1]["jobs"] == []
    assert call("GET", url + "/api/v1/teams/a/usage", b_op)[0] == 403
    assert call("POST", url + "/api/v1/keys", a_op, {"team": "a", "role": "admin"})[0] == 403
    assert call("GET", url + "/api/v1/audit", a_op)[0] == 403
    assert call("GET", f"{url}/api/v1/jobs/a-job", ADMIN_KEY)[0] == 200  # an admin sees every team


def test_a_revoked_key_fails_on_every_node(secure: Cluster, keys: dict[str, dict[str, Any]]) -> None:
    status, doomed = call("POST", secure.nodes[1].url + "/api/v1/keys", ADMIN_KEY, {"team": "a", "role": "viewer"})
    assert status == 201
    for node in secure.nodes:  # known everywhere once applied
        wait_for(lambda n=node: call("GET", n.url + "/api/v1/jobs", doomed["key"])[0] == 200, 5, "key known")
    assert call("DELETE", f"{secure.nodes[0].url}/api/v1/keys/{doomed['id']}", ADMIN_KEY)[0] == 204
    for node in secure.nodes:  # the revoking node at once; the others as soon as they apply the commit
        wait_for(lambda n=node: call("GET", n.url + "/api/v1/jobs", doomed["key"])[0] == 401, 2, "revoked")
    records = call("GET", secure.nodes[2].url + "/api/v1/audit?limit=1000", ADMIN_KEY)[1]["records"]
    revoke = next(r for r in records if r["action"] == "RevokeApiKey" and r["target"] == doomed["id"])
    assert revoke["key"] == "config-admin" and revoke["remote"] == "127.0.0.1" and revoke["result"] == "ok"


def test_cli_creates_and_revokes_keys(secure: Cluster) -> None:
    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "schedb", *args, "--url", secure.nodes[2].url, "--json"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True,
                              env={**os.environ, "SCHEDB_API_KEY": ADMIN_KEY}).stdout

    made = json.loads(cli("keys", "create", "--team", "c", "--role", "viewer", "--name", "cli"))
    assert call("GET", secure.nodes[0].url + "/api/v1/jobs", made["key"])[0] == 200
    assert made["id"] in [k["id"] for k in json.loads(cli("keys", "ls"))]
    cli("keys", "revoke", made["id"])
    wait_for(lambda: call("GET", secure.nodes[0].url + "/api/v1/jobs", made["key"])[0] == 401, 2, "revoked")


def test_fire_rate_quota_throttles_one_team_and_not_the_other(
        secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url = secure.nodes[0].url
    assert call("PUT", url + "/api/v1/teams/a/quotas", ADMIN_KEY, {"fires_per_minute": 4})[0] == 200
    for team, key in (("a", keys["a_op"]["key"]), ("b", keys["b_op"]["key"])):
        for i in range(2):
            assert call("POST", url + "/api/v1/jobs", key, job(f"rate-{team}{i}", receiver.url))[0] == 201
    time.sleep(6)
    for team, key in (("a", keys["a_op"]["key"]), ("b", keys["b_op"]["key"])):
        for i in range(2):
            assert call("POST", f"{url}/api/v1/jobs/rate-{team}{i}/pause", key)[0] == 200
    time.sleep(1.5)
    delivered = [d for d in receiver.deliveries() if d["job_id"].startswith("rate-")]
    per_minute = Counter((d["job_id"][5], scheduled_ms(d) // 60_000) for d in delivered)
    assert all(n <= 4 for (team, _), n in per_minute.items() if team == "a"), per_minute
    assert_every_second(delivered_seconds([d for d in delivered if d["job_id"].startswith("rate-b")]))
    assert sum(1 for d in delivered if d["job_id"].startswith("rate-b")) >= 2 * 5
    throttled = call("GET", url + "/api/v1/jobs/rate-a0/executions?status=throttled", keys["a_op"]["key"])[1]
    assert throttled["executions"] and "fires_per_minute" in throttled["executions"][0]["error"]
    usage = call("GET", url + "/api/v1/teams/a/usage", keys["a_view"]["key"])[1]
    assert usage["usage"]["throttled"] >= 4 and usage["quotas"]["fires_per_minute"] == 4
    assert call("GET", url + "/api/v1/teams/b/usage", keys["b_op"]["key"])[1]["usage"]["throttled"] == 0
    assert _metric(url, 'schedb_team_throttled_total{team="a"}') >= 4
    assert _metric(url, 'schedb_team_throttled_total{team="b"}') == 0
    assert _metric(url, "schedb_cluster_fires_throttled_total") >= 4
    assert call("PUT", url + "/api/v1/teams/a/quotas", ADMIN_KEY, {"fires_per_minute": None})[1]["quotas"][
        "fires_per_minute"] == 600_000  # back to the config's default


def _metric(url: str, series: str) -> float:
    """A sample of /metrics, which needs an admin key when auth is on (it names every team)."""
    assert call("GET", url + "/metrics", None)[0] == 401
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return float(next(line.rsplit(" ", 1)[1] for line in lines if line.startswith(series + " ")))


def test_a_secret_reaches_the_receiver_and_nowhere_else(
        secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url, key = secure.nodes[0].url, keys["a_op"]["key"]
    value = "s3cr3t-" + secrets.token_hex(16)
    assert call("POST", url + "/api/v1/secrets", key, {"name": "token", "value": value})[0] == 201
    spec = job("with-secret", receiver.url + "?api_key={{secrets/token}}", signing_secret="{{secrets/token}}",
               headers={"Authorization": "Bearer {{secrets/token}}"}, body={"token": "{{secrets/token}}"})
    assert call("POST", url + "/api/v1/jobs", key, spec)[0] == 201
    got = wait_for(lambda: [d for d in receiver.deliveries() if d["job_id"] == "with-secret"], 10, "a delivery")
    assert got[0]["authorization"] == f"Bearer {value}" and f"api_key={value}" in got[0]["query"]
    assert value in got[0]["body"]
    stamp, v1 = dict(part.split("=", 1) for part in got[0]["signature"].split(",")).values()
    assert v1 == hmac.new(value.encode(), f"{stamp}.{got[0]['body']}".encode(), hashlib.sha256).hexdigest()
    wait_for(lambda: len(call("GET", url + "/api/v1/jobs/with-secret/executions", key)[1]["executions"]) >= 2,
             10, "executions committed")
    assert call("POST", url + "/api/v1/jobs/with-secret/pause", key)[0] == 200
    answers = [call("GET", url + path, who)[1] for path, who in (
        ("/api/v1/jobs/with-secret", key), ("/api/v1/jobs", key), ("/api/v1/jobs/with-secret/executions", key),
        ("/api/v1/executions", key), ("/api/v1/secrets", key), ("/api/v1/audit?limit=1000", ADMIN_KEY))]
    assert all(value not in str(a) for a in answers)
    snapshots = wait_for(lambda: [p for n in secure.nodes for p in (secure.tmp_dir / f"data-{n.node_id}").rglob("*")
                                  if p.is_file() and "dump" in p.name], 30, "a snapshot on disk")
    files = [p for p in secure.tmp_dir.rglob("*") if p.is_file() and p.name != "deliveries.jsonl"]
    assert snapshots and any("journal" in p.name for p in files)
    leaks = [str(p) for p in files if value.encode() in p.read_bytes()]
    assert leaks == [], f"the plain secret is in {leaks}"


def test_egress_guard_refuses_metadata_and_the_cluster_at_create(
        secure: Cluster, keys: dict[str, dict[str, Any]]) -> None:
    url, key = secure.nodes[0].url, keys["a_op"]["key"]
    raft_port, http_port = secure.nodes[1].raft_port, secure.nodes[2].http_port
    for target in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://224.0.0.1/",
                   "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:8080/", f"http://127.0.0.1:{raft_port}/",
                   f"http://localhost:{raft_port}/", f"http://localhost:{http_port}/api/v1/jobs"):
        status, problem = call("POST", url + "/api/v1/jobs", key, job("ssrf", target))
        assert status == 422, (target, problem)
        assert problem["errors"][0]["field"] == "webhook.url" and "egress" in problem["errors"][0]["message"]
    assert call("GET", url + "/api/v1/jobs/ssrf", key)[0] == 404


def test_redirects_are_not_followed(secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url, key = secure.nodes[0].url, keys["b_op"]["key"]
    targets = {"to-metadata": "http://169.254.169.254/latest/meta-data/",
               "to-elsewhere": receiver.url.replace("/hook", "/followed")}
    for job_id, target in targets.items():
        spec = job(job_id, f"{receiver.url}?redirect={target}") | {"retry": {"max_attempts": 1}}
        assert call("POST", url + "/api/v1/jobs", key, spec)[0] == 201
    for job_id in targets:
        rows = wait_for(lambda j=job_id: call("GET", f"{url}/api/v1/jobs/{j}/executions", key)[1]["executions"],
                        10, "an execution")
        assert rows[0]["status"] == "failed" and rows[0]["http_status"] == 302, rows[0]
        assert call("POST", f"{url}/api/v1/jobs/{job_id}/pause", key)[0] == 200
    assert not [d for d in receiver.deliveries() if d["path"] == "/followed"]


def test_delivery_checks_the_target_again_after_dns(tmp_path: Path, receiver: Receiver) -> None:
    """The policy tightened under existing jobs (loopback no longer allowed): their next
    deliveries are refused, by name (checked after DNS) and by address, and nothing arrives."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        cluster.wait_ready()
        url = cluster.nodes[0].url
        targets = {"by-name": f"http://localhost:{receiver.port}/hook", "by-ip": receiver.url}
        for job_id, target in targets.items():
            assert http("POST", url + "/api/v1/jobs", job(job_id, target))[0] == 201
        wait_for(lambda: {d["job_id"] for d in receiver.deliveries()} >= set(targets), 10, "first deliveries")
        cluster.stop()
        for node in cluster.nodes:
            node.config.write_text(node.config.read_text().replace("allow_loopback = true", "allow_loopback = false"))
        restarted_ms = int(time.time() * 1000)
        cluster.start()
        cluster.wait_ready()
        for job_id in targets:
            refused = wait_for(lambda j=job_id: [e for e in http("GET", f"{url}/api/v1/jobs/{j}/executions")[2][
                "executions"] if "egress" in (e["error"] or "")], 15, f"a refused delivery of {job_id}")
            assert refused[0]["status"] == "failed"
        late = [d for d in receiver.deliveries() if d["job_id"] in targets and d["arrival_ms"] > restarted_ms]
        assert late == []
        assert http("POST", url + "/api/v1/jobs", job("new-by-name", targets["by-name"]))[0] == 422
    finally:
        cluster.stop()


def test_hard_limits_answer_413_and_422(secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url, key = secure.nodes[0].url, keys["a_op"]["key"]
    auth = {"Authorization": f"Bearer {key}"}
    status, headers, problem = http("POST", url + "/api/v1/jobs", raw=b"{" + b" " * 1_100_000 + b"}", headers=auth)
    assert status == 413 and headers["Content-Type"].startswith("application/problem+json")
    many = {**auth, **{f"X-Pad-{i}": "x" for i in range(70)}}
    status, _, problem = http("GET", url + "/api/v1/jobs", headers=many)
    assert status == 413 and problem["errors"][0]["field"] == "headers"
    too_much = {
        "webhook.headers": job("big", receiver.url, headers={f"X-H{i}": "v" for i in range(33)}),
        "webhook.url": job("big", receiver.url + "?" + "q" * 3000),
        "tags": job("big", receiver.url) | {"tags": {f"t{i}": "v" for i in range(33)}},
        "webhook.body": job("big", receiver.url, body={"blob": "x" * 70_000}),
    }
    for field, spec in too_much.items():
        status, problem = call("POST", url + "/api/v1/jobs", key, spec)
        assert status == 422 and field in [e["field"] for e in problem["errors"]], (field, problem)


def test_api_rate_quota_limits_one_team(secure: Cluster, keys: dict[str, dict[str, Any]]) -> None:
    url = secure.nodes[0].url
    assert call("PUT", url + "/api/v1/teams/b/quotas", ADMIN_KEY, {"api_rps": 5})[0] == 200
    try:
        answers = [http("GET", url + "/api/v1/jobs", headers={"X-API-Key": keys["b_op"]["key"]}) for _ in range(20)]
        limited = [a for a in answers if a[0] == 429]
        assert limited and limited[0][1]["Retry-After"] == "1" and limited[0][2]["errors"][0]["field"] == "api_rps"
        assert all(call("GET", url + "/api/v1/jobs", keys["a_op"]["key"])[0] == 200 for _ in range(20))
    finally:
        time.sleep(1)  # a second refills the bucket for the reset below
        assert call("PUT", url + "/api/v1/teams/b/quotas", ADMIN_KEY, {"api_rps": None})[0] == 200


def test_concurrent_webhooks_quota_serializes_a_teams_calls(
        secure: Cluster, keys: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    url, key = secure.nodes[0].url, keys["b_op"]["key"]
    assert call("PUT", url + "/api/v1/teams/b/quotas", ADMIN_KEY, {"concurrent_webhooks": 1})[0] == 200
    try:
        for i in range(6):  # on two executors: one of them runs at least three a second
            assert call("POST", url + "/api/v1/jobs", key, job(f"slow-{i}", receiver.url + "?hang=0.3"))[0] == 201
        time.sleep(4)
        for i in range(6):
            assert call("POST", f"{url}/api/v1/jobs/slow-{i}/pause", key)[0] == 200
    finally:
        assert call("PUT", url + "/api/v1/teams/b/quotas", ADMIN_KEY, {"concurrent_webhooks": None})[0] == 200
    by_node: dict[str, list[int]] = {}
    for d in receiver.deliveries():
        if d["job_id"].startswith("slow-"):
            by_node.setdefault(d["node"], []).append(d["arrival_ms"])
    assert sum(len(v) for v in by_node.values()) >= 6
    for node, arrivals in by_node.items():  # one call at a time per executor: arrivals a hang apart
        gaps = [b - a for a, b in zip(sorted(arrivals), sorted(arrivals)[1:], strict=False)]
        assert all(gap >= 250 for gap in gaps), (node, gaps)


def _raw(node_url: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, Any]:
    """Exactly the headers given (urllib would add a form Content-Type to any body)."""
    conn = HTTPConnection(urlsplit(node_url).netloc, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        text, content_type = answer.read(), answer.getheader("Content-Type", "")
        return answer.status, (json.loads(text) if "json" in content_type and text else content_type)
    finally:
        conn.close()


def test_a_web_page_cannot_change_a_cluster_without_auth(cluster: Cluster, receiver: Receiver) -> None:
    """Auth off (the local cluster): what a foreign page may send without a CORS preflight (no body,
    text/plain, a form) is refused on every state-changing call; JSON or a client header passes."""
    url = cluster.nodes[0].url
    assert http("POST", url + "/api/v1/jobs", job("csrf", receiver.url, paused=True))[0] == 201
    origin = {"Origin": "http://attacker.example"}
    simple = [("POST", "/api/v1/jobs/csrf/resume", {}, None),
              ("POST", "/api/v1/jobs/csrf/trigger", {"Content-Type": "text/plain"}, b"{}"),
              ("POST", "/api/v1/jobs/csrf/trigger", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
              ("POST", "/api/v1/jobs", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
              ("DELETE", "/api/v1/jobs/csrf", {}, None),
              ("POST", "/api/v1/cluster/leave", {}, None)]
    for method, path, headers, body in simple:
        status, problem = _raw(url, method, path, {**origin, **headers}, body)
        assert status == 415, (method, path, headers, problem)
        assert problem["status"] == 415 and problem["errors"][0]["field"] == "Content-Type", problem
    status, _, still = http("GET", url + "/api/v1/jobs/csrf")
    assert status == 200 and still["paused"] is True
    assert http("GET", url + "/api/v1/jobs/csrf/executions")[2]["executions"] == []
    for header in ({"X-Schedb-Client": "script"}, {"X-Requested-With": "XMLHttpRequest"},
                   {"Content-Type": "application/json"}):
        assert _raw(url, "POST", "/api/v1/jobs/csrf/pause", header)[0] == 200, header
    preflight = {"Origin": cluster.nodes[1].url, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-schedb-client"}  # the console, calling another node
    assert _raw(url, "OPTIONS", "/api/v1/jobs/csrf/pause", preflight)[0] == 204

    def cli(*args: str) -> str:  # the command line sends JSON on every call
        command = [sys.executable, "-m", "schedb", *args, "--url", cluster.nodes[2].url, "--json"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout

    assert json.loads(cli("jobs", "resume", "csrf"))["paused"] is False
    cli("jobs", "rm", "csrf")
    assert http("GET", url + "/api/v1/jobs/csrf")[0] == 404
