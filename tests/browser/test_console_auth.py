"""The console with auth on: the API key is asked for, kept in the tab's sessionStorage only,
the console shows the key's team and only that team's jobs, and a revoked key logs it out."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from devkit.harness import Cluster
from tests.browser.conftest import VIEWPORT, shown
from tests.integration.conftest import running_cluster
from tests.integration.keys import ADMIN_KEY, AUTH_ON, call, make_key


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("secure-console")), AUTH_ON) as cluster:
        yield cluster


def log_in(page: Page, key: str) -> None:
    expect(page.locator("#login")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#login-submit")


def test_login_keeps_the_key_in_the_tab_and_shows_only_its_team(page: Page, browser: Browser, secure: Cluster) -> None:
    a_key, b_key = make_key(secure, "a", "operator"), make_key(secure, "b", "operator")
    url = secure.nodes[0].url
    for key, job_id in ((a_key, "a-nightly"), (a_key, "a-hourly"), (b_key, "b-secret-job")):
        body = {"id": job_id, "schedule": "@every 1h", "webhook": {"url": "http://127.0.0.1:9/"}}
        assert call("POST", url + "/api/v1/jobs", key["key"], body)[0] == 201

    page.goto(url + "/ui/#/jobs")
    log_in(page, "sk_wrong_" + secrets.token_urlsafe(8))
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    page.fill("#api-key", a_key["key"])
    page.click("#login-submit")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#whoami")).to_contain_text("team a · operator")
    expect(page.locator("#jobs tr[data-job]")).to_have_count(2)
    expect(page.locator("#jobs-count")).to_have_text(shown(1, 2, "2"))
    assert page.locator("#jobs tr[data-job='b-secret-job']").count() == 0
    page.goto(url + "/ui/#/jobs/b-secret-job")  # another team's job does not exist for this key
    expect(page.locator("#job-gone")).to_be_visible()

    # The key lives in this tab's sessionStorage, nowhere else.
    assert page.evaluate("sessionStorage.getItem('schedb.api_key')") == a_key["key"]
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.reload()
    expect(page.locator("#whoami")).to_contain_text("team a")
    expect(page.locator("#login")).to_be_hidden()
    other = browser.new_context(viewport=VIEWPORT)
    try:
        fresh = other.new_page()
        fresh.goto(url + "/ui/")
        expect(fresh.locator("#login")).to_be_visible()
    finally:
        other.close()

    # A revoked key ends the session: the open event stream is closed and the login comes back.
    assert call("DELETE", f"{url}/api/v1/keys/{a_key['id']}", ADMIN_KEY)[0] == 204
    page.goto(url + "/ui/#/cluster")
    expect(page.locator("#login")).to_be_visible(timeout=20_000)
    log_in(page, b_key["key"])
    expect(page.locator("#whoami")).to_contain_text("team b")
    page.goto(url + "/ui/#/jobs")
    expect(page.locator("#jobs tr[data-job]")).to_have_count(1)
