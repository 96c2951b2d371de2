"""Issue 16, defect 4, against a real cluster: webhook hosts that spell 127.0.0.1 or 169.254.169.254 with
the digits of another script (fullwidth, Arabic-Indic, Devanagari, segmented U+1FBF0, ...). The HTTP client
reads some of them as the address itself while getaddrinfo fails on all of them, so the API used to
accept them. Each one is refused with a problem naming webhook.url, and no such job exists on any node."""

from __future__ import annotations

import pytest

from devkit.devcluster import http
from devkit.harness import Cluster
from tests.unit.test_egress import digit_sets, unicode_digit_hosts

pytestmark = pytest.mark.integration


def test_hosts_in_non_ascii_digits_are_refused_at_create(cluster: Cluster) -> None:
    """The cluster runs as every test cluster does, loopback allowed ([egress] allow_loopback = true):
    127.0.0.1 itself is a valid target there, so the refusal is of the spelling, not of the address."""
    url = cluster.nodes[0].url
    hosts = unicode_digit_hosts()
    assert len(hosts) == 2 * len(digit_sets()) >= 120
    accepted = {}
    for i, host in enumerate(hosts):
        job = {"id": f"ssrf-digits-{i}", "schedule": "@every 1s", "paused": True,
               "webhook": {"url": f"http://{host}:8080/hook"}}
        status, headers, problem = http("POST", url + "/api/v1/jobs", job)
        if status not in (400, 422):
            accepted[host] = status
            continue
        assert headers["Content-Type"].startswith("application/problem+json"), (host, headers)
        assert [e["field"] for e in problem["errors"]] == ["webhook.url"], (host, problem)
    assert accepted == {}
    control = {"id": "ssrf-digits-ascii", "schedule": "@every 1s", "paused": True,
               "webhook": {"url": "http://127.0.0.1:8080/hook"}}
    assert http("POST", url + "/api/v1/jobs", control)[0] == 201
    for node in cluster.nodes:  # a node that answers has applied at least what the create committed
        status, _, page = http("GET", node.url + "/api/v1/jobs?limit=1000")
        assert status == 200
        assert [j["id"] for j in page["jobs"] if j["id"].startswith("ssrf-digits-")] in ([], ["ssrf-digits-ascii"])
        assert all(http("GET", f"{node.url}/api/v1/jobs/ssrf-digits-{i}")[0] == 404 for i in range(len(hosts)))
