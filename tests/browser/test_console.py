"""The console in a real browser against a real three-node cluster and webhook receiver:
create a job through the form, watch its executions arrive live, pause it, replay a dead
letter, and the same with polling instead of the event stream."""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.timefmt import ms_to_rfc3339
from tests.browser.conftest import confirm, deliveries_of
from tests.integration.workload import wait_for


def test_create_a_job_through_the_form_and_watch_it_run_live(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    page.goto(cluster.nodes[0].url + "/ui/#/new")
    page.fill("#f-id", "from-the-form")
    page.fill("#f-schedule", "*/5 * *")  # a broken cron: the preview says why, as it is typed
    expect(page.locator("#f-schedule-error")).to_contain_text("5 fields")
    expect(page.locator("#f-schedule")).to_have_attribute("aria-invalid", "true")
    page.fill("#f-schedule", "*/2 * * * * *")  # every two seconds (seconds first)
    expect(page.locator("#f-words")).to_contain_text("Every 2 seconds")
    expect(page.locator("#f-next li")).to_have_count(5)
    page.fill("#f-timezone", "Mars/Olympus")
    expect(page.locator("#f-timezone-error")).not_to_be_empty()
    page.fill("#f-timezone", "Europe/Berlin")
    page.fill("#f-url", "ftp://nowhere")  # the server's field error lands next to the field
    page.click("#f-submit")
    expect(page.locator("#f-url-error")).not_to_be_empty()
    page.fill("#f-url", receiver.url)
    page.fill("#f-tags", "env: test\nowner: console")
    page.click("#f-submit")

    expect(page).to_have_url(re.compile(r"#/jobs/from-the-form$"))
    expect(page.locator("#job-state")).to_have_text("active")
    expect(page.locator("#job-words")).to_contain_text("Europe/Berlin")
    expect(page.locator("#job-next-fires li")).to_have_count(5)
    # Executions pushed by the server appear without a reload (marked fresh as they come in).
    expect(page.locator("#executions tr.fresh")).not_to_have_count(0, timeout=15_000)
    wait_for(lambda: page.locator("#executions tr[data-fire]").count() >= 3, 20, "three executions shown")
    expect(page.locator("#executions tr[data-fire] .status").first).to_have_text("succeeded")
    assert int(page.locator("#job-chart").get_attribute("data-points") or 0) >= 2
    shown = set(page.locator("#executions tr[data-fire]").evaluate_all("rows => rows.map(r => r.dataset.fire)"))
    delivered = {d["fire_id"] for d in deliveries_of(receiver, "from-the-form")}
    assert shown <= delivered, f"shown but never delivered: {shown - delivered}"
    _, _, job = http("GET", cluster.nodes[1].url + "/api/v1/jobs/from-the-form")
    assert job["tags"] == {"env": "test", "owner": "console"} and job["timezone"] == "Europe/Berlin"


def test_pause_from_the_job_page_stops_the_deliveries(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    body = {"id": "to-pause", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    page.goto(cluster.nodes[1].url + "/ui/#/jobs/to-pause")
    expect(page.locator("#executions tr[data-fire]")).not_to_have_count(0, timeout=10_000)
    page.click("#job-pause")
    page.click("#confirm-cancel")  # asked first; cancelling changes nothing
    assert http("GET", cluster.nodes[0].url + "/api/v1/jobs/to-pause")[2]["paused"] is False
    page.click("#job-pause")
    confirm(page)
    expect(page.locator("#job-state")).to_have_text("paused")
    expect(page.locator("#job-resume")).to_be_visible()
    assert http("GET", cluster.nodes[2].url + "/api/v1/jobs/to-pause")[2]["paused"] is True
    time.sleep(1.5)  # a fire already handed to an executor may still land
    settled = len(deliveries_of(receiver, "to-pause"))
    time.sleep(3)
    assert len(deliveries_of(receiver, "to-pause")) == settled, "delivered after the pause"


def test_a_dead_letter_shows_up_live_and_is_replayed(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    page.goto(cluster.nodes[2].url + "/ui/#/dlq")
    expect(page.locator("#dlq-count")).to_contain_text("shown")
    at = ms_to_rfc3339(int(time.time() * 1000) + 2000)
    body = {"id": "doomed", "schedule": f"@at {at}", "retry": {"max_attempts": 1},
            "webhook": {"url": receiver.url + "?fail=always"}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    row = page.locator("#dlq tr[data-fire^='doomed:']")
    expect(row).to_have_count(1, timeout=15_000)  # pushed by the server: the page was not reloaded
    row.click()
    expect(page.locator("#dlq-last-error")).to_contain_text("500")
    fire_id = row.get_attribute("data-fire")
    # Mend the webhook, then replay from the console.
    assert http("PATCH", cluster.nodes[0].url + "/api/v1/jobs/doomed", {"webhook": {"url": receiver.url}})[0] == 200
    row.locator("input.pick").check()
    expect(page.locator("#dlq-replay-selected")).to_have_text("Replay selected (1)")
    page.click("#dlq-replay-selected")
    confirm(page)
    expect(row).to_have_count(0)
    def replayed() -> bool:
        return any(d["fire_id"] == fire_id and "fail" not in d["query"] for d in deliveries_of(receiver, "doomed"))

    wait_for(replayed, 15, "the replayed fire delivered")
    assert http("GET", cluster.nodes[1].url + "/api/v1/dlq?job_id=doomed")[2]["total"] == 0


def test_polling_instead_of_the_event_stream(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    body = {"id": "polled", "schedule": "@every 1s", "webhook": {"url": receiver.url}}
    assert http("POST", cluster.nodes[0].url + "/api/v1/jobs", body)[0] == 201
    page.goto(cluster.nodes[0].url + "/ui/?transport=poll#/jobs/polled")
    expect(page.locator("#conn")).to_contain_text("polling")
    wait_for(lambda: page.locator("#executions tr[data-fire]").count() >= 4, 20, "executions refreshed by polling")
    page.goto(cluster.nodes[0].url + "/ui/?transport=poll#/cluster")
    expect(page.locator("#members tr[data-node]")).to_have_count(3)
    expect(page.locator("#leader")).to_have_text(cluster.leader().node_id)


def test_a_registered_job_shows_its_service_and_its_workflow_preview(page: Page, cluster: Cluster,
                                                                      receiver: Receiver) -> None:
    declared = {"service": "inventory", "jobs": [{"name": "sync", "schedule": "0 2 * * *", "description": "sync stock",
                                                  "callback_url": receiver.url}]}
    assert http("POST", cluster.nodes[0].url + "/api/v1/registrations", declared)[0] in (200, 201)
    page.goto(cluster.nodes[2].url + "/ui/#/jobs?status=paused&q=inventory")
    expect(page.locator("#jobs tr[data-job='inventory.sync'] .state")).to_have_text("paused")  # disabled at first
    page.click("#jobs a:text('inventory.sync')")
    expect(page.locator("#job-registration")).to_contain_text("Registered by service inventory as sync: sync stock")
    expect(page.locator("#job-words")).to_contain_text("At 02:00")
    expect(page.locator("#job-next-fires li")).to_have_count(5)
