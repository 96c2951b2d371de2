"""schemathesis against the served OpenAPI document, auth on (issue 8, acceptance 6): no 5xx,
and every answer (status, content type, headers, body) as the document describes it.

A real three-node cluster with auth and secrets on; an operator key of one team makes the
requests, the config's admin key those that need the admin role. A few seeded resources
(a job that delivers to a receiver, a dead letter, a secret) are named in the generated
paths of some operations, so that their success answers are checked too, not only 404s.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.secretbox import generate_key_text
from tests.integration.conftest import running_cluster
from tests.integration.workload import wait_for

pytestmark = pytest.mark.integration

TEAM = "st-team"
ADMIN_TEAM = "st-admins"  # its own name: fuzzed quotas (PUT /teams/{team}/quotas) are unlikely to throttle it
SEED = int(os.environ.get("SCHEDB_ST_SEED", "20260801"))
MAX_EXAMPLES = int(os.environ.get("SCHEDB_ST_MAX_EXAMPLES", "100"))
RUN_TIMEOUT_S = 600
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
# Membership changes would take the cluster under test apart: POST/DELETE members add or
# drain-and-remove nodes, and /cluster/leave drains the answering node's executor for good.
# tests/integration/test_api.py and test_operations.py cover them. /api/v1/events is an endless
# stream (tests/integration/test_events.py and the browser tests cover it).
EXCLUDED_PATHS = ("/api/v1/cluster/members", "/api/v1/cluster/members/{member}", "/api/v1/cluster/leave",
                  "/api/v1/events")
ADMIN_OPERATIONS = r"^(POST|GET|DELETE) /api/v1/keys|^GET /api/v1/audit|^PUT /api/v1/teams/"


def _call(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    code, _, answer = http(method, url, body, headers={"Authorization": f"Bearer {token}"})
    return code, answer


def _seed(url: str, admin: str, operator: str, receiver: Receiver) -> dict[str, str]:
    """A job with a successful execution, a dead letter, a secret, and things to delete, all of TEAM."""
    yearly = "0 0 1 1 *"  # a backfill of any past range stays small
    jobs = {"st-job": receiver.url, "st-dead": receiver.url + "?fail=always", "st-doomed": receiver.url}
    for job_id, hook in jobs.items():
        code, answer = _call("POST", url + "/api/v1/jobs", operator, {
            "id": job_id, "schedule": yearly, "webhook": {"url": hook}, "retry": {"max_attempts": 1}})
        assert code == 201, answer
    for job_id in ("st-job", "st-dead"):
        code, answer = _call("POST", f"{url}/api/v1/jobs/{job_id}/trigger", operator)
        assert code == 202, answer
    code, answer = _call("POST", url + "/api/v1/secrets", operator, {"name": "st-secret", "value": "s3cret"})
    assert code == 201, answer
    code, doomed_key = _call("POST", url + "/api/v1/keys", admin, {"team": TEAM, "role": "viewer"})
    assert code == 201, doomed_key
    wait_for(lambda: _call("GET", url + "/api/v1/jobs/st-job/executions?status=succeeded", operator)[1]["executions"],
             30, "an execution of st-job")
    letters = wait_for(lambda: _call("GET", url + "/api/v1/dlq?job_id=st-dead", operator)[1]["dead_letters"],
                       30, "a dead letter of st-dead")
    return {"job_id": "st-job", "doomed_job_id": "st-doomed", "fire_id": letters[0]["fire_id"],
            "name": "st-secret", "team": TEAM, "doomed_key_id": doomed_key["id"]}


def _toml(value: Any) -> str:
    """An inline TOML value (JSON's string escapes are TOML's)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _often(dictionary: str, probability: float = 0.7) -> dict[str, Any]:
    return {"dictionary": dictionary, "probability": probability}


def _config(path: Path, operator: str, admin: str, seeded: dict[str, str], receiver: Receiver) -> Path:
    """schemathesis.toml. The operator's key makes every request but those that need an admin.
    Valid schedules, webhook URLs (the receiver), times and the operator's team are often used
    instead of random strings, so that jobs get created and their answers checked, not only 422s;
    the seeded job, dead letter, secret and team are often named in paths. Every DELETE and the
    quota change get names of their own: schemathesis also feeds values seen in answers into
    paths, and could take the seeded job, the operator's key or its team's request rate away."""
    dictionaries = {
        "schedules": ["@hourly", "0 0 1 1 *", "31 10-15 1 * * MON-FRI", "@every 1h30m", "@at 2099-01-01T00:00:00Z"],
        "hooks": [receiver.url, receiver.url + "?fail=always", receiver.url + "?status=429&retry_after=1"],
        "times": ["2020-01-01T00:00:00Z", "2021-06-01T12:00:00+02:00", "2024-02-29T00:00:00.500Z"],
        "zones": ["UTC", "Europe/Berlin", "America/Sao_Paulo", "Asia/Kolkata"],
        "teams": [seeded["team"]], "jobs": [seeded["job_id"]], "dead": [seeded["fire_id"]],
    }
    parameters = {"query.team": _often("teams", 0.8), "body.schedule": _often("schedules"),
                  "body.timezone": _often("zones", 0.5), "body.webhook.url": _often("hooks"),
                  "body.jobs[*].schedule": _often("schedules"), "body.jobs[*].webhook.url": _often("hooks"),
                  "body.start": _often("times"), "body.end": _often("times")}
    operations = [
        (ADMIN_OPERATIONS, {"headers": {"Authorization": f"Bearer {admin}"}}),
        (r"^(GET|PUT|PATCH) /api/v1/jobs/\{job_id\}$|^(GET|POST) /api/v1/jobs/\{job_id\}/",
         {"parameters": {"path.job_id": _often("jobs", 0.8)}}),
        (r"^DELETE /api/v1/jobs/", {"parameters": {"path.job_id": seeded["doomed_job_id"]}}),
        (r" /api/v1/dlq/\{fire_id\}", {"parameters": {"path.fire_id": _often("dead", 0.8)}}),
        (r"^DELETE /api/v1/secrets/", {"parameters": {"path.name": seeded["name"]}}),
        (r"^DELETE /api/v1/keys/", {"parameters": {"path.key_id": seeded["doomed_key_id"]}}),
        (r"^GET /api/v1/teams/", {"parameters": {"path.team": _often("teams", 0.8)}}),
        (r"^PUT /api/v1/teams/", {"parameters": {"path.team": "st-quota-team"}}),
    ]
    lines = [f"headers = {_toml({'Authorization': f'Bearer {operator}'})}", "",
             "[generation]", "# The key comes from the headers: generated ones would only get 401.",
             "with-security-parameters = false", 'database = "none"', ""]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml(values)}", ""]
    lines += ["[parameters]", *(f"{json.dumps(k)} = {_toml(v)}" for k, v in parameters.items()), ""]
    for name_regex, settings in operations:
        lines += ["[[operations]]", f"include-name-regex = {json.dumps(name_regex)}",
                  *(f"{k} = {_toml(v)}" for k, v in settings.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _schemathesis(config: Path, url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", url + "/api/v1/openapi.json",
        "--checks", ",".join(CHECKS),
        # examples: the documented examples; coverage: boundary and near-miss values of every
        # parameter and field, deterministic; fuzzing: random positive and negative data.
        "--phases", "examples,coverage,fuzzing,stateful", "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--workers", "1",  # two cores also run three nodes and the receiver
        "--request-timeout", "15",  # above the API's own commit timeout (5 s)
        "--no-color", "--output-truncate", "false",
        *[arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)],
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=workdir)


@dataclass
class Secured:
    """A running cluster with auth on, its admin and operator keys, and the seeded names."""

    cluster: Cluster
    url: str
    admin: str
    operator: str
    seeded: dict[str, str]
    receiver: Receiver
    workdir: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    admin = secrets.token_urlsafe(32)
    extra = (f'\n[auth]\nenabled = true\nadmin_key = "{admin}"\nadmin_team = "{ADMIN_TEAM}"\n\n'
             f'[secrets]\nkey = "{generate_key_text()}"\n')
    with running_cluster(workdir, extra) as cluster:
        url = cluster.nodes[0].url
        code, key = _call("POST", url + "/api/v1/keys", admin, {"team": TEAM, "role": "operator",
                                                                "name": "schemathesis"})
        assert code == 201, key
        seeded = _seed(url, admin, key["key"], receiver)
        yield Secured(cluster, url, admin, key["key"], seeded, receiver, workdir)
        crashes = [line for node in cluster.nodes for line in node.log.read_text(errors="replace").splitlines()
                   if '"unhandled_error"' in line]
        assert not crashes, "\n".join(crashes[:5])  # a 500 answered to anyone, the seeding included


def _job(top: str = "", webhook: str = "", url: str = "http://127.0.0.1:1/") -> str:
    return '{"schedule": "@hourly", "webhook": {"url": "' + url + '"' + webhook + "}" + top + "}"


ODD_INPUTS = [
    ("GET", "/api/v1/jobs?limit=%C2%B2", {}, None, 400),  # a digit to str.isdigit, not to int()
    ("GET", "/api/v1/executions?limit=" + "9" * 5000, {}, None, 400),  # over int()'s 4,300 digits
    ("DELETE", "/api/v1/jobs/st-doomed", {"If-Match": '"\xc2\xb2"'}, None, 400),
    ("POST", "/api/v1/jobs", {"Idempotency-Key": "\xff\xfe"}, _job(), 400),
    ("GET", "/api/v1/jobs", {"Authorization": "Bearer \xff\xfe"}, None, 401),
    ("GET", "/api/v1/jobs", {"Authorization": "", "X-API-Key": "\xc3\x28"}, None, 401),
    ("POST", "/api/v1/jobs", {}, "[" * 100_000 + "]" * 100_000, 400),  # RecursionError in json.loads
    ("POST", "/api/v1/jobs", {}, _job(top=', "tags": {"a": "\\ud800"}'), 400),  # no UTF-8 for the log
    ("POST", "/api/v1/secrets", {}, '{"name": "s1", "value": "\\udfff"}', 400),
    ("POST", "/api/v1/jobs", {}, _job(webhook=', "body": 18446744073709551616'), 400),  # not for msgpack
    ("POST", "/api/v1/jobs", {}, _job(webhook=', "body": ' + "1" * 5000), 400),
    # Python's json takes these, and the answer was no JSON: {"body": NaN}
    ("POST", "/api/v1/jobs", {}, _job(webhook=', "body": [NaN, -Infinity]'), 400),
    ("POST", "/api/v1/jobs", {}, _job(webhook=', "body": 1e999'), 400),
    ("POST", "/api/v1/jobs", {}, _job(top=', "timezone": "Europe"'), 422),  # a directory of tzdata
    # next_fire_at in the year 10000: the job was stored, then every list of its team answered 500
    ("POST", "/api/v1/jobs", {}, _job().replace("@hourly", "@at 9999-12-31T23:59:59-14:00"), 422),
    ("POST", "/api/v1/jobs", {}, _job(url="http://a..b/"), 422),  # a host name without an IDNA form
    ("POST", "/api/v1/jobs", {}, _job(url=f"http://{'a' * 64}.example/"), 422),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status"), ODD_INPUTS,
                         ids=[f"{m} {p[:40]} {b[:60] if b else h}" for m, p, h, b, _ in ODD_INPUTS])
def test_odd_input_gets_a_problem_not_a_server_error(secured: Secured, method: str, path: str,
                                                     headers: dict[str, str], body: str | None,
                                                     status: int) -> None:
    request = urllib.request.Request(secured.url + path, method=method, data=None if body is None else body.encode(),
                                     headers={"Authorization": f"Bearer {secured.operator}",
                                              "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            code, content_type, text = answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as exc:
        code, content_type, text = exc.code, exc.headers["Content-Type"], exc.read()
    assert (code, content_type.split(";")[0]) == (status, "application/problem+json"), text[:500]


def test_api_answers_as_its_openapi_document_says_with_auth_on(secured: Secured) -> None:
    config = _config(secured.workdir / "schemathesis.toml", secured.operator, secured.admin, secured.seeded,
                     secured.receiver)
    started = time.monotonic()
    run = _schemathesis(config, secured.url, secured.workdir)
    took = time.monotonic() - started
    assert run.returncode == 0, f"schemathesis failed (seed {SEED}, {took:.0f} s):\n{run.stdout}\n{run.stderr}"
    print(f"schemathesis: seed {SEED}, {took:.0f} s\n" + run.stdout[run.stdout.rfind("Test cases:"):])
