"""The job list with 10,000 jobs: filtered, paged and counted by the server, so the page stays
as quick as with fifty. The times are written to test-artifacts/browser/console-10k.json and
printed (measured, not asserted: the machines are shared)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from devkit.devcluster import http
from tests.browser.conftest import ARTIFACTS, shown
from tests.integration.conftest import running_cluster

JOBS = 10_000
BULK = 1_000


def load(url: str) -> None:
    for start in range(0, JOBS, BULK):
        jobs = [{"id": f"job-{i:05d}", "schedule": "0 0 1 1 *", "paused": i % 10 == 0,
                 "tags": {"shard": str(i % 7)}, "webhook": {"url": "http://127.0.0.1:9/"}}
                for i in range(start, start + BULK)]
        status, _, answer = http("POST", url + "/api/v1/jobs/bulk", {"jobs": jobs}, timeout_s=60)
        assert status in (200, 201, 207) and not answer.get("errors"), answer


def timed(action: object, ready: object) -> float:
    started = time.monotonic()
    action()  # type: ignore[operator]
    ready()  # type: ignore[operator]
    return round((time.monotonic() - started) * 1000)


def test_ten_thousand_jobs_page_and_filter_on_the_server(page: Page, tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        url = cluster.nodes[1].url
        load(cluster.nodes[0].url)
        rows = page.locator("#jobs tr[data-job]")
        count = page.locator("#jobs-count")
        times = {
            "open_list_ms": timed(lambda: page.goto(url + "/ui/#/jobs"),
                                  lambda: expect(count).to_have_text(shown(1, 50, "10,000"))),
        }
        expect(rows).to_have_count(50)
        times["list_render_ms_in_page"] = int(page.locator("#jobs-timing").get_attribute("data-ms") or -1)
        times["next_page_ms"] = timed(lambda: page.click("#jobs-next"),
                                      lambda: expect(count).to_have_text(shown(51, 100, "10,000")))
        expect(rows.first).to_have_attribute("data-job", "job-00050")
        times["search_ms"] = timed(lambda: page.fill("#job-q", "job-0999"),
                                   lambda: expect(count).to_have_text(shown(1, 10, "10")))
        page.fill("#job-q", "")
        times["filter_paused_ms"] = timed(lambda: page.select_option("#job-status", "paused"),
                                          lambda: expect(count).to_have_text(shown(1, 50, "1,000")))
        times["filter_tag_ms"] = timed(lambda: page.fill("#job-tag", "shard:3"),
                                       lambda: expect(count).to_have_text(shown(1, 50, "143")))
        page.select_option("#job-status", "")
        page.fill("#job-tag", "")
        times["sort_next_fire_ms"] = timed(lambda: page.select_option("#job-sort", "next_fire"),
                                           lambda: expect(count).to_have_text(shown(1, 50, "10,000")))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "console-10k.json").write_text(json.dumps(times, indent=1))
        print(f"\nconsole with {JOBS:,} jobs: {times}")
