"""The console's forms and lists in a real browser against a three-node cluster: an edit keeps
what the form does not show, a create whose answer was lost is not made twice by the second
click, the job page's buttons, replaying many dead letters (the failed ones stay ticked), the
job list under quick filter changes and double clicks, and a malformed address."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import quote, unquote

from playwright.sync_api import Browser, Page, Route, expect

from devkit.devcluster import http
from devkit.harness import Cluster, Receiver
from schedb.webhook import sign
from tests.browser.conftest import VIEWPORT, confirm, csp_refusals, deliveries_of, shown
from tests.integration.workload import wait_for

SECRET = "a-signing-secret-of-32-characters"
NEVER = "0 0 1 1 *"  # once a year: no fire during a test


def api(cluster: Cluster, method: str, path: str, body: Any = None, node: int = 0) -> tuple[int, Any]:
    status, _, answer = http(method, cluster.nodes[node].url + path, body)
    return status, answer


def dead_letters(cluster: Cluster, receiver: Receiver, job_id: str, count: int) -> list[str]:
    """`count` dead letters of a new job at once: a backfill of `count` yearly occurrences, each
    failing its only attempt. The job's webhook then works, so that replays succeed."""
    body = {"id": job_id, "schedule": NEVER, "retry": {"max_attempts": 1},
            "webhook": {"url": receiver.url + "?fail=always"}}
    assert api(cluster, "POST", "/api/v1/jobs", body)[0] == 201
    years = {"start": "2001-01-01T00:00:00Z", "end": f"{2000 + count}-01-01T00:00:00Z"}
    assert api(cluster, "POST", f"/api/v1/jobs/{job_id}/backfill", years)[1]["fires"] == count
    dead = f"/api/v1/dlq?job_id={job_id}"
    wait_for(lambda: api(cluster, "GET", dead)[1]["total"] == count, 20, f"{count} dead letters")
    assert api(cluster, "PATCH", f"/api/v1/jobs/{job_id}", {"webhook": {"url": receiver.url}})[0] == 200
    return [d["fire_id"] for d in api(cluster, "GET", dead)[1]["dead_letters"]]


def test_an_edit_keeps_what_the_form_does_not_show(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    assert api(cluster, "POST", "/api/v1/jobs", {"id": "kept-upstream", "schedule": NEVER,
                                                 "webhook": {"url": receiver.url}})[0] == 201
    tags = {"owner": "team a: billing, ops", "env": "prod"}
    headers = {"X-Trace": "a: b, c", "X-Empty": ""}
    body = {"id": "kept", "schedule": "0 3 * * *", "timezone": "Europe/Berlin", "depends_on": ["kept-upstream"],
            "tags": tags, "priority": "high", "concurrency": "forbid",
            "webhook": {"url": receiver.url, "method": "PUT", "headers": headers, "body": {"n": 1, "s": "x:y"},
                        "timeout_s": 12.5, "signing_secret": SECRET},
            "retry": {"max_attempts": 4, "backoff_s": 1.5, "backoff_max_s": 77}}
    status, created = api(cluster, "POST", "/api/v1/jobs", body)
    assert status == 201, created

    page.goto(cluster.nodes[1].url + "/ui/#/jobs/kept/edit")
    expect(page.locator("#f-schedule")).to_have_value("0 3 * * *")
    expect(page.locator("#f-tags")).to_have_value("owner: team a: billing, ops\nenv: prod")
    page.fill("#f-schedule", "0 4 * * *")
    page.fill("#f-backoff", "")  # an empty box keeps the value the job had
    expect(page.locator("#f-words")).to_contain_text("04:00")
    page.click("#f-submit")
    expect(page).to_have_url(f"{cluster.nodes[1].url}/ui/#/jobs/kept")

    job = api(cluster, "GET", "/api/v1/jobs/kept", node=2)[1]
    assert job["schedule"] == "0 4 * * *" and job["version"] == created["version"] + 1
    assert job["tags"] == tags and job["depends_on"] == ["kept-upstream"]
    assert job["retry"] == {"max_attempts": 4, "backoff_s": 1.5, "backoff_max_s": 77}
    webhook = job["webhook"]
    assert webhook["signing_secret"] == "********", "the stored secret is kept, and shown masked"
    assert (webhook["headers"], webhook["body"], webhook["method"], webhook["timeout_s"]) == (
        headers, {"n": 1, "s": "x:y"}, "PUT", 12.5)
    assert (job["timezone"], job["priority"], job["concurrency"]) == ("Europe/Berlin", "high", "forbid")

    # The secret that signs the deliveries is still the one the job was created with.
    assert api(cluster, "POST", "/api/v1/jobs/kept/trigger", {})[0] == 202
    delivery = wait_for(lambda: next(iter(deliveries_of(receiver, "kept")), None), 15, "a delivery of kept")
    fields = dict(part.split("=", 1) for part in delivery["signature"].split(","))
    assert delivery["signature"] == sign(SECRET, int(fields["t"]), delivery["body"].encode())


def test_tags_that_lines_cannot_carry_are_edited_as_json(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    tags = {"a:b": " padded ", "env": "prod"}
    body = {"id": "odd-tags", "schedule": NEVER, "tags": tags, "webhook": {"url": receiver.url}}
    status, created = api(cluster, "POST", "/api/v1/jobs", body)
    assert status == 201, created
    page.goto(cluster.nodes[0].url + "/ui/#/jobs/odd-tags/edit")
    expect(page.locator("#f-tags")).to_have_value(re.compile(r'^\{\s*"a:b": " padded "'))
    page.click("#f-submit")
    expect(page).to_have_url(f"{cluster.nodes[0].url}/ui/#/jobs/odd-tags")
    job = api(cluster, "GET", "/api/v1/jobs/odd-tags")[1]
    assert job["tags"] == tags and job["version"] == created["version"] + 1


def test_a_lost_answer_then_a_second_click_creates_one_job(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    marker = uuid.uuid4().hex[:12]
    lost: list[str] = []

    def lose_the_answer(route: Route) -> None:
        if route.request.method == "POST" and not lost:
            route.fetch()  # the server gets the request and creates the job...
            lost.append(route.request.headers["idempotency-key"])
            route.abort()  # ...but the page never hears of it
        else:
            route.continue_()

    page.route("**/api/v1/jobs", lose_the_answer)
    page.goto(cluster.nodes[0].url + "/ui/#/new")
    page.fill("#f-schedule", NEVER)
    page.fill("#f-url", receiver.url)
    page.fill("#f-tags", f"marker: {marker}\nnote: lost answer, then: retried")
    page.fill("#f-timeout", "")  # empty: the server's default, not 0
    page.fill("#f-backoff", "")
    page.click("#f-submit")
    expect(page.locator("#f-errors")).to_contain_text("did not answer")
    assert lost, "the create reached the server"
    page.click("#f-submit")  # the same Idempotency-Key: the server answers with the job already made
    expect(page.locator("#job-state")).to_have_text("active")
    expect(page.locator("#banner")).to_be_hidden()  # one lost answer did not move the console

    listed = api(cluster, "GET", f"/api/v1/jobs?tag={quote('marker:' + marker)}&total=true")[1]
    assert listed["total"] == 1, listed
    job = listed["jobs"][0]
    assert page.url.endswith(f"#/jobs/{job['id']}")
    assert job["tags"] == {"marker": marker, "note": "lost answer, then: retried"}
    assert job["webhook"]["timeout_s"] == 30 and job["retry"]["backoff_s"] == 1


def test_resume_run_now_and_delete_from_the_job_page(page: Page, cluster: Cluster, receiver: Receiver) -> None:
    body = {"id": "buttons", "schedule": NEVER, "paused": True, "webhook": {"url": receiver.url}}
    assert api(cluster, "POST", "/api/v1/jobs", body)[0] == 201
    page.goto(cluster.nodes[2].url + "/ui/#/jobs/buttons")
    expect(page.locator("#job-state")).to_have_text("paused")
    page.click("#job-resume")
    confirm(page)
    expect(page.locator("#job-state")).to_have_text("active")
    expect(page.locator("#job-pause")).to_be_visible()
    # Read from the node the console talks to: another follower may not have applied the resume yet.
    assert api(cluster, "GET", "/api/v1/jobs/buttons", node=2)[1]["paused"] is False

    page.click("#job-trigger")
    confirm(page)
    wait_for(lambda: deliveries_of(receiver, "buttons"), 15, "the run-now delivery")
    expect(page.locator("#executions tr[data-fire]")).not_to_have_count(0)
    assert "manual" in page.locator("#executions tr[data-fire]").first.inner_text()

    page.click("#job-delete")
    page.click("#confirm-cancel")  # asked first
    assert api(cluster, "GET", "/api/v1/jobs/buttons")[0] == 200
    page.click("#job-delete")
    confirm(page)
    expect(page).to_have_url(f"{cluster.nodes[2].url}/ui/#/jobs")
    assert api(cluster, "GET", "/api/v1/jobs/buttons", node=1)[0] == 404


def test_replaying_many_dead_letters_keeps_the_failed_ones_ticked(page: Page, cluster: Cluster,
                                                                  receiver: Receiver) -> None:
    letters = dead_letters(cluster, receiver, "many-dead", 4)
    dead = "/api/v1/dlq?job_id=many-dead"

    page.goto(cluster.nodes[1].url + "/ui/#/dlq")
    page.fill("#dlq-job", "many-dead")
    rows = page.locator("#dlq tr[data-fire]")
    expect(rows).to_have_count(len(letters))
    expect(page.locator("#dlq-count")).to_have_text(f"{len(letters)} shown of {len(letters)}")
    expect(page.locator("#dlq-more")).to_be_hidden()
    unlucky = letters[0]

    def refuse(route: Route) -> None:
        route.abort()

    page.route(lambda url: url.endswith("/replay") and unquote(url).split("/dlq/")[1] == f"{unlucky}/replay", refuse)
    page.check("#dlq-all")
    expect(page.locator("#dlq-replay-selected")).to_have_text(f"Replay selected ({len(letters)})")
    page.click("#dlq-replay-selected")
    confirm(page)
    expect(page.locator(".toast.bad")).to_contain_text(f"1 of {len(letters)} not replayed")
    expect(rows).to_have_count(1)
    expect(page.locator(f"#dlq tr[data-fire='{unlucky}'] input.pick")).to_be_checked()
    expect(page.locator("#dlq-replay-selected")).to_have_text("Replay selected (1)")
    expect(page.locator("#banner")).to_be_hidden()

    page.unroute_all()
    page.click("#dlq-replay-selected")
    confirm(page)
    expect(rows).to_have_count(0)

    def all_replayed() -> bool:
        ok = {d["fire_id"] for d in deliveries_of(receiver, "many-dead") if "fail" not in d["query"]}
        return set(letters) <= ok

    wait_for(all_replayed, 20, "every replayed fire delivered")
    assert api(cluster, "GET", dead, node=2)[1]["total"] == 0


def test_show_more_dead_letters_up_to_the_most_one_answer_holds(page: Page, cluster: Cluster,
                                                                receiver: Receiver) -> None:
    total = len(dead_letters(cluster, receiver, "lots-dead", 6))

    # Thousands of dead letters in miniature: each limit the page asks for (200, 400 ... 1000)
    # is cut by 200 on the way (1, 2 ... 5).
    def scaled(route: Route) -> None:
        url = route.request.url
        limit = int(url.split("limit=")[1].split("&")[0])
        route.continue_(url=url.replace(f"limit={limit}", f"limit={limit // 200}"))

    page.route(lambda url: "/api/v1/dlq?" in url, scaled)
    page.goto(cluster.nodes[0].url + "/ui/#/dlq")
    page.fill("#dlq-job", "lots-dead")
    rows = page.locator("#dlq tr[data-fire]")
    count = page.locator("#dlq-count")
    expect(count).to_have_text(f"1 shown of {total}")
    for shown_now in (2, 3, 4, 5):
        page.click("#dlq-more")
        expect(rows).to_have_count(shown_now)
    expect(count).to_contain_text(f"5 shown of {total} (the newest 1,000; filter by job id to see others)")
    expect(page.locator("#dlq-more")).to_be_hidden()

def test_the_job_list_shows_the_newest_filter_and_one_page_per_click(page: Page, cluster: Cluster) -> None:
    jobs = [{"id": f"list-{i:03d}", "schedule": NEVER, "tags": {"batch": "list"},
             "webhook": {"url": "http://127.0.0.1:9/"}} for i in range(120)]
    status, answer = api(cluster, "POST", "/api/v1/jobs/bulk", {"jobs": jobs})
    assert status in (200, 201) and not answer.get("errors"), answer
    # The answer to a search for "zz-slow" comes 1.5 s late, after the next search's.
    page.add_init_script("""{
      const realFetch = window.fetch;
      window.fetch = (input, init) => {
        const answer = realFetch(input, init);
        if (!String(input).includes('q=zz-slow')) return answer;
        return answer.then((r) => new Promise((ok) => setTimeout(() => ok(r), 1500)));
      };
    }""")
    page.goto(cluster.nodes[0].url + "/ui/#/jobs?tag=batch:list")
    count = page.locator("#jobs-count")
    expect(count).to_have_text(shown(1, 50, "120"))
    page.dblclick("#jobs-next")  # one page on, not two
    expect(count).to_have_text(shown(51, 100, "120"))
    expect(page.locator("#jobs tr[data-job]").first).to_have_attribute("data-job", "list-050")
    page.click("#jobs-next")
    expect(count).to_have_text(shown(101, 120, "120"))
    expect(page.locator("#jobs-next")).to_be_disabled()
    page.click("#jobs-prev")
    expect(count).to_have_text(shown(51, 100, "120"))

    with page.expect_request(lambda request: "q=zz-slow" in request.url):
        page.fill("#job-q", "zz-slow")
    page.fill("#job-q", "list-01")
    expect(count).to_have_text(shown(1, 10, "10"))
    time.sleep(2)  # the older search's answer has come meanwhile, and was dropped
    expect(count).to_have_text(shown(1, 10, "10"))
    expect(page.locator("#jobs tr[data-job]")).to_have_count(10)


def test_a_malformed_address_says_no_such_page(page: Page, cluster: Cluster) -> None:
    page.goto(cluster.nodes[0].url + "/ui/#/jobs/%E0%A4%A")
    expect(page.locator("#view")).to_contain_text("No such page")
    page.goto(cluster.nodes[0].url + "/ui/#/jobs/%E0%A4%A/edit")
    expect(page.locator("#not-found")).to_be_visible()
    page.click("#not-found a")
    expect(page.locator("#leader")).not_to_be_empty()


def test_the_csp_check_sees_a_refused_inline_style(browser: Browser, cluster: Cluster) -> None:
    """The page fixture fails a test on what the policy refused; this checks it would notice."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        tab = context.new_page()
        refused = csp_refusals(tab)
        tab.goto(cluster.nodes[0].url + "/ui/#/cluster")
        expect(tab.locator("#leader")).not_to_be_empty()
        assert refused == []
        with tab.expect_console_message(lambda message: message.type == "error"):
            tab.evaluate("document.querySelector('#view').setAttribute('style', 'color: red')")
        assert len(refused) == 1 and "inline style" in refused[0], refused
    finally:
        context.close()
