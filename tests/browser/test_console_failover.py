"""The console through a leader's death: the page is connected to the leader, which is
SIGKILLed. The page must say so, move to another node within a few seconds, show the new
leader, and keep showing executions live through the node it moved to."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from schedb.devcluster import http
from schedb.harness import Receiver
from tests.browser.conftest import ARTIFACTS
from tests.integration.conftest import running_cluster


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rec = Receiver(tmp_path)
    try:
        yield rec
    finally:
        rec.stop()


def test_the_console_moves_to_another_node_when_its_node_dies(page: Page, tmp_path: Path,
                                                               receiver: Receiver) -> None:
    (tmp_path / "cluster").mkdir()
    with running_cluster(tmp_path / "cluster") as cluster:
        leader = cluster.leader()
        body = {"id": "heartbeat", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
        assert http("POST", leader.url + "/api/v1/jobs", body)[0] == 201
        page.goto(leader.url + "/ui/#/cluster")
        expect(page.locator("#conn")).to_contain_text(f"live · {leader.node_id}")
        expect(page.locator("#leader")).to_have_text(leader.node_id)
        expect(page.locator("#members tr[data-node] .health .ready")).to_have_count(3)

        assert leader.proc is not None
        leader.proc.kill()  # SIGKILL: no goodbye to the page
        killed = time.monotonic()
        leader.proc.wait(timeout=10)
        banner = page.locator("#banner")
        expect(banner).to_contain_text(f"Node {leader.node_id}", timeout=20_000)
        moved_s = time.monotonic() - killed
        survivors = [n for n in cluster.nodes if n is not leader]
        expect(banner).to_contain_text("now talks to")
        assert any(n.node_id in banner.inner_text().split("now talks to")[1] for n in survivors)

        new_leader = cluster.leader(timeout_s=20)
        assert new_leader is not leader
        expect(page.locator("#leader")).to_have_text(new_leader.node_id, timeout=20_000)
        leader_shown_s = time.monotonic() - killed
        expect(page.locator("#leader-changes")).to_contain_text(f"leader {leader.node_id} →")
        row = page.locator(f"#members tr[data-node='{leader.node_id}'] .health")
        expect(row).to_have_text("unreachable", timeout=10_000)

        # It carries on: executions still arrive live through the node it moved to.
        page.click("a[data-nav='jobs']")
        page.click("#jobs a:text('heartbeat')")
        expect(page.locator("#executions tr.fresh")).not_to_have_count(0, timeout=15_000)
        expect(page.locator("#conn")).to_contain_text("live")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "console-failover.json").write_text(json.dumps(
            {"banner_after_kill_s": round(moved_s, 2), "new_leader_shown_after_kill_s": round(leader_shown_s, 2)}))
        print(f"\nconsole moved {moved_s:.2f} s after the SIGKILL; new leader shown after {leader_shown_s:.2f} s")
