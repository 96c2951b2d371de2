"""What the web console needs from the API (issue 10), against real three-node clusters: the job
list filtered, sorted, paged and counted on the server; whoami; CORS between the nodes, so a
console loaded from one node can carry on through another."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from devkit.devcluster import free_port, http
from devkit.harness import Cluster
from tests.integration.conftest import running_cluster
from tests.integration.keys import ADMIN_KEY, AUTH_ON

pytestmark = pytest.mark.integration

HOOK = "http://127.0.0.1:1/never"
COUNT = 30  # cx-000 … cx-029 in the default team


def at(minute: int) -> str:
    return f"@at 2090-01-01T00:{minute:02d}:00Z"


def console_job(i: int) -> dict[str, Any]:
    """Next fires run against the ids, two jobs to a minute (ties go by id); every fifth is paused."""
    return {"id": f"cx-{i:03d}", "schedule": at((COUNT - 1 - i) // 2), "webhook": {"url": HOOK},
            "paused": i % 5 == 0, "tags": {"env": "prod" if i % 2 else "dev"}}


def expected_by_next_fire() -> list[str]:
    jobs = [console_job(i) for i in range(COUNT)]
    active = sorted((j for j in jobs if not j["paused"]), key=lambda j: (j["schedule"], j["id"]))
    return [j["id"] for j in active] + sorted(j["id"] for j in jobs if j["paused"])


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def is_problem(headers: dict[str, str]) -> bool:
    return (header(headers, "Content-Type") or "").split(";")[0] == "application/problem+json"


def jobs_of(url: str, key: str | None = None, **params: str) -> dict[str, Any]:
    code, _, body = http("GET", f"{url}/api/v1/jobs?{urlencode(params)}",
                         headers={"Authorization": f"Bearer {key}"} if key else {})
    assert code == 200, body
    return body


def ids(url: str, key: str | None = None, **params: str) -> list[str]:
    return [j["id"] for j in jobs_of(url, key, **params)["jobs"]]


def bulk(url: str, jobs: list[dict[str, Any]], team: str = "", key: str | None = None) -> None:
    code, _, result = http("POST", f"{url}/api/v1/jobs/bulk" + (f"?team={team}" if team else ""), {"jobs": jobs},
                           headers={"Authorization": f"Bearer {key}"} if key else {})
    assert code == 200 and result["created"] == len(jobs), result


def register(url: str, names: dict[str, str]) -> None:
    entries = [{"name": n, "schedule": "@hourly", "callback_url": HOOK, "description": d} for n, d in names.items()]
    code, _, result = http("POST", url + "/api/v1/registrations", {"service": "svc", "jobs": entries})
    assert code == 200, result


@pytest.fixture(scope="module")
def seeded(cluster: Cluster) -> Cluster:
    """Auth off: 30 jobs of the default team, 10 of team "other", two registered jobs of service
    svc (svc.export described as billing work, svc.gone no longer declared: orphaned)."""
    url = cluster.nodes[1].url
    bulk(url, [console_job(i) for i in range(COUNT)])
    bulk(url, [{"id": f"ox-{i:03d}", "schedule": at(40), "webhook": {"url": HOOK}, "tags": {"env": "prod"}}
               for i in range(10)], team="other")
    register(url, {"export": "Nightly BILLING export", "gone": "old"})
    register(url, {"export": "Nightly BILLING export"})
    return cluster


def test_q_matches_id_and_description_case_insensitively(seeded: Cluster) -> None:
    url = seeded.nodes[0].url
    assert ids(url, q="CX-00") == [f"cx-00{i}" for i in range(10)]
    assert ids(url, q="billing") == ["svc.export"]
    assert ids(url, q="no-such-thing", total="true") == []


def test_status_filters(seeded: Cluster) -> None:
    url = seeded.nodes[2].url
    paused = [f"cx-{i:03d}" for i in range(0, COUNT, 5)]
    assert ids(url, q="cx-", status="paused") == paused
    assert ids(url, q="cx-", status="active") == sorted(set(ids(url, q="cx-")) - set(paused))
    assert ids(url, status="orphaned") == ["svc.gone"]
    assert ids(url, status="orphaned", paused="false") == []  # registered jobs start paused; filters combine


def test_next_before(seeded: Cluster) -> None:
    url = seeded.nodes[0].url
    # minutes 0 and 1 are cx-026 … cx-029 (none of them paused); cx-024 and cx-025 fire at minute 2
    assert ids(url, next_before="2090-01-01T00:01:00Z") == ["cx-026", "cx-027", "cx-028", "cx-029"]
    assert ids(url, next_before="2090-01-01T01:01:00+01:00") == ["cx-026", "cx-027", "cx-028", "cx-029"]
    assert ids(url, next_before="2000-01-01T00:00:00Z") == []
    assert "svc.export" not in ids(url, next_before="2999-01-01T00:00:00Z")  # paused: no next fire


def test_tag_and_team_combine(seeded: Cluster) -> None:
    url = seeded.nodes[1].url
    assert ids(url, tag="env:prod", team="other") == [f"ox-{i:03d}" for i in range(10)]
    assert ids(url, tag="env:dev", team="default") == [f"cx-{i:03d}" for i in range(0, COUNT, 2)]
    assert jobs_of(url, tag="env:prod", total="true", limit="1")["total"] == COUNT // 2 + 10


@pytest.mark.parametrize("limit", [1, 7, 30])
def test_both_orders_page_to_the_end_with_nothing_missing_or_repeated(seeded: Cluster, limit: int) -> None:
    url = seeded.nodes[0].url
    for sort, expected in (("id", sorted(expected_by_next_fire())), ("next_fire", expected_by_next_fire())):
        seen: list[str] = []
        after = ""
        for _ in range(COUNT + 1):
            page = jobs_of(url, q="cx-", sort=sort, limit=str(limit), total="true", after=after)
            assert page["total"] == COUNT and len(page["jobs"]) <= limit
            seen += [j["id"] for j in page["jobs"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert seen == expected, sort


def test_next_fire_order_puts_jobs_without_a_next_fire_last(seeded: Cluster) -> None:
    page = jobs_of(seeded.nodes[2].url, q="cx-", sort="next_fire", limit="30")["jobs"]
    fires = [j["next_fire_at"] for j in page]
    assert fires[:24] == sorted(fires[:24]) and None not in fires[:24] and fires[24:] == [None] * 6


def test_total_only_when_asked(seeded: Cluster) -> None:
    url = seeded.nodes[1].url
    page = jobs_of(url, q="cx-", limit="5", total="true")
    assert page["total"] == COUNT and page["next_after"] == "cx-004" and len(page["jobs"]) == 5
    assert "total" not in jobs_of(url, q="cx-", limit="5")
    assert jobs_of(url, q="cx-", limit="5", after="cx-004", total="true")["total"] == COUNT  # not of the page
    assert jobs_of(url, total="true", limit="1")["total"] == COUNT + 10 + 2


def cursor(raw: str) -> str:
    return "nf1." + base64.urlsafe_b64encode(raw.encode()).decode()


BAD_PARAMS = [
    ({"q": "x" * 201}, "q"),
    ({"status": "sleeping"}, "status"),
    ({"next_before": "tomorrow"}, "next_before"),
    ({"next_before": "2026-01-01T00:00:00"}, "next_before"),  # no offset
    ({"next_before": "2026-01-01T00:00:00Z" + " " * 100}, "next_before"),
    ({"sort": "name"}, "sort"),
    ({"total": "yes"}, "total"),
    ({"sort": "next_fire", "after": "cx-004"}, "after"),  # an id is no cursor of this order
    ({"sort": "next_fire", "after": "nf1.%%%"}, "after"),
    ({"sort": "next_fire", "after": cursor('{"a": 1}')}, "after"),
    ({"sort": "next_fire", "after": cursor("[1e400, 3]")}, "after"),
    ({"sort": "next_fire", "after": cursor('["1", "cx-001"]')}, "after"),
    ({"sort": "next_fire", "after": cursor("[" * 5000)}, "after"),
    ({"sort": "next_fire", "after": "nf1.//79"}, "after"),  # not UTF-8
    ({"limit": "0"}, "limit"),
]


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS, ids=[f for _, f in BAD_PARAMS])
def test_bad_parameters_are_a_problem_naming_the_field(seeded: Cluster, params: dict[str, str],
                                                       field: str) -> None:
    code, headers, body = http("GET", f"{seeded.nodes[0].url}/api/v1/jobs?{urlencode(params)}")
    assert code == 400 and is_problem(headers), body
    assert body["errors"][0]["field"] == field


def test_whoami_with_auth_off(seeded: Cluster) -> None:
    code, _, me = http("GET", seeded.nodes[0].url + "/api/v1/whoami")
    assert code == 200 and me == {"auth": False, "key_id": None, "team": "default", "role": "admin"}


def preflight(url: str, origin: str, method: str = "DELETE") -> tuple[int, dict[str, str], Any]:
    return http("OPTIONS", url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": "authorization,if-match,content-type"})


def assert_preflight_allowed(answer: tuple[int, dict[str, str], Any], origin: str) -> None:
    code, headers, _ = answer
    assert code == 204, answer
    assert header(headers, "Access-Control-Allow-Origin") == origin
    assert header(headers, "Vary") == "Origin" and header(headers, "Access-Control-Max-Age") == "600"
    assert {"DELETE", "PATCH", "PUT", "POST", "GET"} <= set(header(headers, "Access-Control-Allow-Methods")
                                                            .replace(" ", "").split(","))
    allowed = header(headers, "Access-Control-Allow-Headers").lower()
    for name in ("authorization", "x-api-key", "content-type", "if-match", "idempotency-key"):
        assert name in allowed
    assert header(headers, "Access-Control-Allow-Credentials") is None


def assert_actual_allowed(headers: dict[str, str], origin: str) -> None:
    assert header(headers, "Access-Control-Allow-Origin") == origin
    assert "Origin" in header(headers, "Vary")
    assert {"ETag", "Location", "Retry-After"} <= set(header(headers, "Access-Control-Expose-Headers")
                                                      .replace(" ", "").split(","))


def test_cors_preflight_from_other_members_is_allowed(seeded: Cluster) -> None:
    url = seeded.nodes[0].url
    other = f"http://127.0.0.1:{seeded.nodes[1].http_port}"
    assert_preflight_allowed(preflight(url + "/api/v1/jobs/cx-001", other), other)
    local = f"http://localhost:{seeded.nodes[2].http_port}"
    assert_preflight_allowed(preflight(url + "/api/v1/jobs", local, "POST"), local)
    own = f"https://[::1]:{seeded.nodes[0].http_port}"
    assert_preflight_allowed(preflight(url + "/api/v1/no-such-route", own), own)  # before routing's 404/405


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:{free}", "null",
                                    "ftp://127.0.0.1:{member}", "http://127.0.0.1:{member}/path",
                                    "http://user@127.0.0.1:{member}", "http://127.0.0.1:99999"])
def test_cors_preflight_from_elsewhere_is_refused(seeded: Cluster, origin: str) -> None:
    origin = origin.format(free=free_port(), member=seeded.nodes[1].http_port)
    code, headers, body = preflight(seeded.nodes[0].url + "/api/v1/jobs", origin)
    assert code == 403 and is_problem(headers), body
    assert header(headers, "Access-Control-Allow-Origin") is None


def test_cors_headers_on_actual_answers(seeded: Cluster) -> None:
    url = seeded.nodes[2].url
    origin = f"http://127.0.0.1:{seeded.nodes[0].http_port}"
    code, headers, _ = http("GET", url + "/api/v1/jobs?limit=1", headers={"Origin": origin})
    assert code == 200
    assert_actual_allowed(headers, origin)
    code, headers, body = http("GET", url + "/api/v1/jobs/no-such-job", headers={"Origin": origin})
    assert code == 404 and is_problem(headers), body
    assert_actual_allowed(headers, origin)
    code, headers, _ = http("GET", url + "/api/v1/jobs?status=bogus", headers={"Origin": origin})
    assert code == 400
    assert_actual_allowed(headers, origin)
    code, headers, _ = http("GET", url + "/api/v1/jobs?limit=1", headers={"Origin": "http://evil.example"})
    assert code == 200 and header(headers, "Access-Control-Allow-Origin") is None


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("console-auth")), AUTH_ON) as cluster:
        yield cluster


def test_with_auth_on_whoami_scoping_and_cors(secure: Cluster) -> None:
    url = secure.nodes[0].url
    code, _, viewer = http("POST", url + "/api/v1/keys", {"team": "a", "role": "viewer", "name": "console"},
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert code == 201, viewer
    me = http("GET", url + "/api/v1/whoami", headers={"X-API-Key": viewer["key"]})[2]
    assert me == {"auth": True, "key_id": viewer["id"], "team": "a", "role": "viewer"}
    admin = http("GET", url + "/api/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_KEY}"})[2]
    assert admin["key_id"] == "config-admin" and admin["role"] == "admin"

    for team in ("a", "b"):
        bulk(url, [{"id": f"{team}-{i}", "schedule": at(i), "webhook": {"url": HOOK}} for i in range(3)],
             team=team, key=ADMIN_KEY)
    page = jobs_of(url, viewer["key"], sort="next_fire", total="true")
    assert [j["id"] for j in page["jobs"]] == ["a-0", "a-1", "a-2"] and page["total"] == 3
    assert jobs_of(url, viewer["key"], team="b", total="true") == {"jobs": [], "next_after": None, "total": 0}

    origin = f"http://localhost:{secure.nodes[1].http_port}"
    assert_preflight_allowed(preflight(url + "/api/v1/whoami", origin, "GET"), origin)  # no key needed
    code, headers, body = http("GET", url + "/api/v1/whoami", headers={"Origin": origin})
    assert code == 401 and body["status"] == 401
    assert_actual_allowed(headers, origin)
