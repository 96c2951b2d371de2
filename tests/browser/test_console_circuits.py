"""The console's cluster page shows the circuit breaker at work (schedb.breaker): a receiver
that is down opens its circuit on the executing nodes; the connected node pushes the change
(a `circuit` event) and every member's open circuits are listed. Workers are shown too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from devkit.devcluster import http
from devkit.flaky import FlakyReceiver
from devkit.harness import Cluster

JOBS = 12  # over two executing followers: each gets some, but for a chance of 2 in 4,096


@pytest.fixture
def down() -> Iterator[FlakyReceiver]:
    receiver = FlakyReceiver()
    receiver.down = True
    try:
        yield receiver
    finally:
        receiver.stop()


def test_a_receiver_going_down_shows_as_an_open_circuit_and_a_pushed_change(
        page: Page, cluster: Cluster, down: FlakyReceiver) -> None:
    follower = cluster.followers()[0]
    page.goto(follower.url + "/ui/#/cluster")
    expect(page.locator("#circuit-changes")).to_contain_text("No change since this page was opened.")
    expect(page.locator("#members tr[data-node] .workers").first).to_have_text("own loop")
    jobs = [{"id": f"to-down-{i}", "schedule": "@every 1s", "retry": {"max_attempts": 1},
             "webhook": {"url": f"{down.url}/j{i}", "timeout_s": 2}} for i in range(JOBS)]
    try:
        code, _, answer = http("POST", cluster.nodes[0].url + "/api/v1/jobs/bulk", {"jobs": jobs})
        assert code in (200, 201) and not answer.get("errors"), answer
        # Pushed by the connected node as its circuit opened (the page was not reloaded).
        change = page.locator("#circuit-changes li", has_text=down.url.split("//")[1])
        expect(change.first).to_contain_text("open", timeout=20_000)
        expect(change.first).to_contain_text(f"{follower.node_id}: circuit of team default")
        rows = page.locator(f"#circuits tr[data-target='{down.url}']")
        expect(rows.first.locator(".state")).to_have_text("open", timeout=10_000)
        assert {r.split("\t")[0] for r in rows.all_inner_texts()} <= {n.node_id for n in cluster.nodes}
    finally:
        for job in jobs:
            http("DELETE", f"{cluster.nodes[0].url}/api/v1/jobs/{job['id']}")
