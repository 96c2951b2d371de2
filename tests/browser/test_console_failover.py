"""The console through failures, with real SIGKILLs:
1. the leader dies while the page's node lives: the page shows the new leader within seconds;
2. then the page's own node dies: the page says so, moves to another node within a few seconds,
   and keeps showing executions live through it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from devkit.devcluster import http
from devkit.harness import Cluster, NodeProc, Receiver
from tests.browser.conftest import ARTIFACTS
from tests.integration.conftest import running_cluster


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rec = Receiver(tmp_path)
    try:
        yield rec
    finally:
        rec.stop()


def kill(node: NodeProc) -> float:
    assert node.proc is not None
    node.proc.kill()  # SIGKILL: no goodbye to the page
    killed = time.monotonic()
    node.proc.wait(timeout=10)
    return killed


def leader_change_is_shown(page: Page, cluster: Cluster, old: NodeProc) -> float:
    killed = kill(old)
    new = cluster.leader(timeout_s=20)
    assert new is not old
    expect(page.locator("#leader")).to_have_text(new.node_id, timeout=20_000)
    shown_s = time.monotonic() - killed
    expect(page.locator("#leader-changes")).to_contain_text(f"leader {old.node_id} →")
    return shown_s


def test_the_console_follows_a_leader_change_and_its_own_node_dying(page: Page, tmp_path: Path,
                                                                     receiver: Receiver) -> None:
    (tmp_path / "cluster").mkdir()
    with running_cluster(tmp_path / "cluster") as cluster:
        leader = cluster.leader()
        mine = next(n for n in cluster.nodes if n is not leader)  # the node the page talks to
        body = {"id": "heartbeat", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
        assert http("POST", leader.url + "/api/v1/jobs", body)[0] == 201
        page.goto(mine.url + "/ui/#/cluster")
        expect(page.locator("#conn")).to_contain_text(f"live · {mine.node_id}")
        expect(page.locator("#leader")).to_have_text(leader.node_id)
        expect(page.locator("#members tr[data-node] .health .ready")).to_have_count(3)

        times = {"leader_change_shown_s": leader_change_is_shown(page, cluster, leader)}
        expect(page.locator("#banner")).to_be_hidden()  # its own node lived: it stayed there
        expect(page.locator(f"#members tr[data-node='{leader.node_id}'] .health")).to_have_text("unreachable")
        cluster.start([leader])  # back, so the cluster keeps a majority when the page's node dies
        cluster.wait_ready([leader])

        killed = kill(mine)
        banner = page.locator("#banner")
        expect(banner).to_contain_text(f"Node {mine.node_id}", timeout=20_000)
        times["moved_after_own_node_killed_s"] = round(time.monotonic() - killed, 2)
        expect(banner).to_contain_text("now talks to")
        others = [n.node_id for n in cluster.nodes if n is not mine]
        assert any(n in banner.inner_text().split("now talks to")[1] for n in others)
        expect(page.locator(f"#members tr[data-node='{mine.node_id}'] .health")).to_have_text(
            "unreachable", timeout=10_000)

        # It carries on: executions still arrive live through the node it moved to.
        page.click("a[data-nav='jobs']")
        page.click("#jobs a:text('heartbeat')")
        expect(page.locator("#executions tr.fresh")).not_to_have_count(0, timeout=15_000)
        expect(page.locator("#conn")).to_contain_text("live")
        times["leader_change_shown_s"] = round(times["leader_change_shown_s"], 2)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "console-failover.json").write_text(json.dumps(times))
        print(f"\nconsole failover: {times}")
