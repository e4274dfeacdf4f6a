"""The five screens people judge the portal by, at 1400 px and 390 px: screenshots, no sideways scroll, axe.

The matrix, an app's pipeline lane, a promotion waiting for its approver, a rollback form and a
change record. At 390 px none scrolls sideways; axe-core finds no serious or critical violation at
either width. Screenshots: test-artifacts/screenshots/screens-<page>-<width>.png (gitignored).
Also the details of issue #19 item 9 in the browser: timestamps with their zone and the exact time
on hover, copy buttons on SHAs (CSP-safe), links to the app in Argo CD, the app's own revision.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import SCREENSHOTS, Browsing, axe_violations
from tests.e2e.harness import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

WIDTHS = (1400, 390)
TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
TIME_EXACT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def _request_prod_promotion(browsing: Browsing) -> tuple[str, str]:
    """Request the first promotion to prod the matrix offers whose gates pass; return (app, its path)."""
    rm = browsing.login("release_manager")
    links = rm.get_by_role("link", name="Promote to prod")
    expect(links.first).to_be_visible()
    for href in [link.get_attribute("href") or "" for link in links.all()]:
        rm.goto(href)
        button = rm.get_by_role("button", name="Request promotion")
        if button.count() and button.is_enabled():
            rm.get_by_label("Note for the approvers").fill("Screens journey.")
            button.click()
            rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
            app = re.search(r"[?&]app=([^&]+)", href).group(1)
            return app, re.sub(r"^https?://[^/]+", "", rm.url)
    pytest.fail("no promotion to prod offered on the matrix can be requested")


def _change_record(stack: LiveStack, app: str) -> int:
    from audit.models import ChangeRecord

    with stack.orm() as alias:
        record = ChangeRecord.objects.using(alias).filter(app=app, environment="prod").order_by("-id").first()
        assert record is not None, f"no change record of {app} in prod"
        return record.pk


def _check(
    browsing: Browsing, page: Any, name: str, width: int, axe_source: str, problems: list[str]
) -> None:
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    if width < 1000 and overflow > 1:
        wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                 .slice(0, 5).map(e => e.tagName + '.' + e.className)"""
        )
        problems.append(f"{name} at {width} px scrolls sideways by {overflow} px: {wide}")
    for v in axe_violations(page, axe_source):
        problems.append(f"{name} at {width} px: {v['id']} ({v['impact']}) {v['help']} {v['nodes']}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"screens-{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    browsing.shots.append(path)


def test_the_five_screens_at_desktop_and_phone_width(stack: LiveStack, browsing: Browsing, axe_source: str):
    app, promotion = _request_prod_promotion(browsing)
    record = _change_record(stack, app)
    screens = [
        ("release_manager", "matrix", "/inventory/"),
        ("release_manager", "pipeline-lane", f"/inventory/apps/{app}/"),
        ("approver", "approval", promotion),
        ("oncall", "rollback-form", f"/rollbacks/new/?app={app}&env=prod"),
        ("auditor", "change-record", f"/audit/changes/{record}/"),
    ]
    problems: list[str] = []
    pages: dict[str, Any] = {}
    for width in WIDTHS:
        for user, name, path in screens:
            if user not in pages:
                pages[user] = browsing.login(user)
            page = pages[user]
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(path)
            _check(browsing, page, name, width, axe_source, problems)
    assert not problems, "\n".join(problems)

    # The approver sees what to approve: the gates the requester saw, the Approve form.
    approver = pages["approver"]
    approver.set_viewport_size({"width": 1400, "height": 900})
    approver.goto(promotion)
    expect(approver.get_by_role("button", name="Approve")).to_be_visible()
    expect(approver.locator("[data-argocd-links] a").first).to_have_attribute(
        "href", re.compile(r"/applications/[^/]+/" + re.escape(app) + r"-prod-")
    )

    # The change record lists the gates as evaluated, the request's first, with their time.
    auditor = pages["auditor"]
    auditor.set_viewport_size({"width": 1400, "height": 900})
    auditor.goto(f"/audit/changes/{record}/")
    first = auditor.locator("[data-gate-evaluations] h3").first
    expect(first).to_contain_text("Gates at request")
    expect(first.locator("time")).to_have_attribute("title", TIME_EXACT)

    # One timestamp format: the zone in the text, the exact time on hover.
    lane = pages["release_manager"]
    lane.set_viewport_size({"width": 1400, "height": 900})
    lane.goto(f"/inventory/apps/{app}/")
    times = lane.locator("main time")
    expect(times.first).to_be_visible()
    for index in range(min(times.count(), 10)):
        element = times.nth(index)
        assert TIME_TEXT.match((element.text_content() or "").strip()), element.text_content()
        assert TIME_EXACT.match(element.get_attribute("title") or ""), element.get_attribute("title")
    expect(lane.locator("[data-argocd-links] a").first).to_have_attribute(
        "href", re.compile(r"/applications/")
    )

    # A SHA's copy button puts the full SHA on the clipboard (static JS: no CSP report).
    lane.context.grant_permissions(["clipboard-read", "clipboard-write"])
    button = lane.locator("button[data-copy]").first
    full = button.get_attribute("data-copy") or ""
    assert re.fullmatch(r"[0-9a-f]{40}", full), full
    button.click()
    expect(button).to_have_text("Copied")
    assert lane.evaluate("() => navigator.clipboard.readText()") == full
    expect(button).to_have_text("Copy", timeout=5_000)
    browsing.assert_clean()
