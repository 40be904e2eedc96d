"""Browser fixtures: Debian's chromium driven by Playwright's sync API, one page per test.

Never `playwright install`: the browser is Debian's /usr/bin/chromium, started headless with
the flags that keep it off the network (no updates, no sync, no background fetches) and a
fresh temporary profile. Screenshots go to test-output/screenshots/ (git-ignored); a failing
test leaves FAILED-<test>.png there, showing what the page looked like when it failed.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import screenshot_path
from tests.skips import missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container: chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
# Generous: both UIs are single-page apps that fetch everything after load, on 2 busy cores.
TIMEOUT_MS = 60_000

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the item, so a fixture's teardown knows the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless (a Playwright Browser), for one test.

    Per test, not per session: while Playwright's sync API runs, its event loop counts as
    running in this thread, and Prefect calls that dispatch on that (Flow.from_source, in
    stack.deployments.apply) would hand later tests of the session a coroutine. A launch
    costs about a second.
    """
    if not CHROMIUM.exists():
        pytest.skip(missing(f"{CHROMIUM}", "apt-get install chromium"))
    if importlib.util.find_spec("playwright") is None:
        pytest.skip(missing("the playwright module", "pip install -e '.[dev]'"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Plain launch: Playwright gives the browser a fresh temporary profile and removes it.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page (1440x900) of a fresh browser: no cookies or storage shared between tests.

    On failure the page is saved as test-output/screenshots/FAILED-<test>.png.
    """
    from playwright.sync_api import expect

    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    # expect()'s own wait (5 s by default) too: on a busy 2-core machine the MLflow UI took
    # longer than that to fill its runs table.
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        reports = request.node.stash.get(_REPORTS, {})
        if any(r.failed for r in reports.values()):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                page.screenshot(path=screenshot_path(f"FAILED-{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page: the failure itself says more
                print(f"could not save a screenshot of the failed page: {exc}")
        context.close()
