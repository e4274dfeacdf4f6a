"""The matrix, a rollback form and a promotion at 1400 px and 390 px, in the light and dark themes.

At 390 px no page scrolls sideways, the matrix shows one card per application and its filters start
folded; in both themes axe-core finds no serious violation (colour contrast included). Screenshots
of each page, width and theme go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing, axe_violations
from tests.e2e.harness import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

WIDTHS = (1400, 390)
THEMES = ("light", "dark")


def _request_a_promotion(browsing: Browsing) -> tuple[str, str]:
    """Request the first promotion the matrix offers whose gates pass; return (app, its path)."""
    rm = browsing.login("release_manager")
    links = rm.get_by_role("link", name=re.compile(r"^Promote to "))
    expect(links.first).to_be_visible()
    hrefs = [link.get_attribute("href") or "" for link in links.all()]
    for href in hrefs:
        rm.goto(href)
        button = rm.get_by_role("button", name="Request promotion")
        if button.count() and button.is_enabled():
            button.click()
            rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
            app = re.search(r"[?&]app=([^&]+)", href).group(1)
            return app, re.sub(r"^https?://[^/]+", "", rm.url)
    pytest.fail(f"no promotion offered on the matrix can be requested: {hrefs}")


def _open(browsing: Browsing, user: str, width: int, theme: str) -> Any:
    page = browsing.login(user)
    page.set_viewport_size({"width": width, "height": 900})
    page.emulate_media(color_scheme=theme)
    return page


def test_pages_fit_a_phone_and_follow_the_dark_theme(stack: LiveStack, browsing: Browsing, axe_source: str):
    app, promotion = _request_a_promotion(browsing)
    pages = {
        "oncall": [("matrix", "/inventory/"), ("rollback-form", f"/rollbacks/new/?app={app}&env=prod")],
        "approver": [("promotion", promotion)],
    }
    problems: list[str] = []
    for width in WIDTHS:
        for theme in THEMES:
            for user, paths in pages.items():
                page = _open(browsing, user, width, theme)
                for name, path in paths:
                    page.goto(path)
                    page.wait_for_load_state("networkidle")
                    dark = page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches")
                    assert dark == (theme == "dark")
                    overflow = page.evaluate(
                        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
                    )
                    if overflow > 1:
                        problems.append(f"{path} at {width} px ({theme}) scrolls sideways by {overflow} px")
                    for v in axe_violations(page, axe_source):
                        problems.append(
                            f"{path} at {width} px ({theme}): {v['id']} ({v['impact']}) {v['nodes']}"
                        )
                    browsing.shot(page, f"{name}-{width}-{theme}")
    assert not problems, "\n".join(problems)

    # On a phone the matrix filters start folded and each application is a card.
    phone = _open(browsing, "oncall", 390, "light")
    phone.goto("/inventory/")
    panel = phone.locator("details.filter-panel")
    expect(panel).not_to_have_attribute("open", "")
    expect(phone.get_by_label("Search")).to_be_hidden()
    phone.locator("details.filter-panel > summary").click()
    expect(phone.get_by_label("Search")).to_be_visible()
    assert phone.locator("table.matrix thead").evaluate("(el) => getComputedStyle(el).display") == "none"
    # A filtered page keeps its filters open.
    phone.goto(f"/inventory/?q={app}")
    expect(phone.locator("details.filter-panel")).to_have_attribute("open", "")
    browsing.assert_clean()
