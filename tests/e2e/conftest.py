"""Fixtures of the end-to-end tests: the live stack (see harness.py) and headless Chromium.

Tests that use ``live_stack`` must carry ``@pytest.mark.xdist_group("e2e")`` so that one xdist
worker runs them all against one stack; the stack is package-scoped, so it stops (and its database
is dropped) as soon as the last test of this package finished, instead of polling on in the
background while the rest of the suite runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Browsing, axe_script, slug
from tests.e2e.harness import ARTIFACTS, LiveStack


@pytest.fixture(scope="package")
def live_stack(request, django_db_blocker, tmp_path_factory) -> Iterator[LiveStack]:
    """Start the whole portal on the sandbox once for this package; keep logs when a test failed."""
    failed_before = request.session.testsfailed
    for stale in (ARTIFACTS / "e2e", SCREENSHOTS):  # evidence of an earlier run would mislead
        shutil.rmtree(stale, ignore_errors=True)
    stack = LiveStack.start(tmp_path_factory.mktemp("live-stack"), blocker=django_db_blocker)
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            stack.save_logs("logs")
        stack.stop()


@pytest.fixture
def stack(live_stack: LiveStack) -> LiveStack:
    """The live stack, checked alive before each test."""
    live_stack.check_children()
    return live_stack


@pytest.fixture(scope="package")
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/ensure-chromium.sh)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop in this thread; Django's ORM (used here only for
    # assertions on the live database) would refuse to run next to it. Only while the browser runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def browsing(request, chromium, stack: LiveStack) -> Iterator[Browsing]:
    """Browser contexts for this test's users; screenshots on failure, logs copied too."""
    session = Browsing(chromium, stack.base_url, slug(request.node.name))
    failed_before = request.session.testsfailed
    yield session
    failed = request.session.testsfailed > failed_before or _failed(request)
    session.close(failed=failed)
    if failed:
        stack.save_logs(slug(request.node.name))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request) -> bool:
    report = getattr(request.node, "rep_call", None)
    return bool(report and report.failed)


@pytest.fixture(scope="session")
def axe_source() -> str:
    path = axe_script()
    if path is None:
        pytest.skip("axe-core could not be fetched from the npm registry (npm pack axe-core)")
    return path.read_text()
