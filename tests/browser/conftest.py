"""Browser tests of the console: Debian's chromium (/usr/bin/chromium) driven by Playwright.

Playwright's Python package carries its driver; it never downloads a browser here: it runs
the system's chromium, with the flags a closed machine needs (no background networking, no
component updates, no sync) and a fresh profile per browser. `.ci/run` installs chromium and
sets SCHEDB_REQUIRE_BROWSER=1, so on CI a missing browser fails the run instead of skipping.

Each test's page is screenshotted when the test ends, pass or fail, into
test-artifacts/browser/ (or $SCHEDB_ARTIFACTS/browser/); an uncaught error in the page's
JavaScript fails the test, and so does anything the Content Security Policy refused (an inline
style or script, say: Chromium logs it as a console error naming the Content Security Policy,
"Refused to ..." or "Applying inline style violates ..." depending on the version).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.harness import Receiver

# The module-scoped three-node cluster and webhook receiver the integration tests share.
from tests.integration.conftest import cluster, receiver  # noqa: F401

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("SCHEDB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("SCHEDB_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "browser"
VIEWPORT = {"width": 1360, "height": 900}


def shown(first: int, last: int, total: str) -> str:
    """The job list's count line, such as 1-50 of 10,000 written with an en dash, as the page does."""
    return f"{first}\u2013{last} of {total}"


def _browser_missing() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (make install)"
    return None


# Per module, not per session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and pytest-asyncio cannot run the async tests of later modules then.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = _browser_missing()
    if missing and os.environ.get("SCHEDB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required here: {missing}")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class PageErrors(list[str]):
    """Uncaught exceptions in the page's scripts."""


def csp_refusals(page: object) -> list[str]:
    """The console errors in which the page's Content Security Policy refused something, as they come."""
    refused: list[str] = []

    def seen(message: object) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:  # type: ignore[attr-defined]
            refused.append(message.text)  # type: ignore[attr-defined]

    page.on("console", seen)  # type: ignore[attr-defined]
    return refused


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context (its own sessionStorage) and page; screenshotted at the end."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    context.set_default_timeout(15_000)
    tab = context.new_page()
    errors = PageErrors()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    refused = csp_refusals(tab)
    tab.errors = errors
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        name = request.node.name + ("-FAILED" if failed else "")
        try:
            tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert not errors, f"the page's scripts raised: {errors}"
    assert not refused, f"the Content Security Policy refused: {refused}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def confirm(page: Any) -> None:
    """Answer the console's confirmation dialog with yes."""
    from playwright.sync_api import expect

    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")


def deliveries_of(webhook_receiver: Receiver, job_id: str) -> list[dict[str, Any]]:
    return [d for d in webhook_receiver.deliveries() if d["job_id"] == job_id]
