"""The pipeline lane on the app page and the matrix summary, in Chromium at 1400 px and 390 px."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import SCREENSHOTS, Browsing
from tests.e2e.harness import LiveStack
from tests.e2e.test_journeys import _choose_app_behind_in_prod

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

PHONE = {"width": 390, "height": 844}
SLOW = 90_000  # ms: beat polls every 2 s, the matrix refreshes itself every 15 s


def test_release_manager_sees_the_pipeline_lane_and_the_matrix_summary(stack: LiveStack, browsing: Browsing):
    rm = browsing.login("release_manager")
    rm.goto("/inventory/")
    summary = rm.locator("[data-matrix-summary]")
    expect(summary).to_contain_text("0 Degraded")
    # Argo CD's fault lever turns the prod of one app Degraded: the summary counts it.
    prod_version = rm.locator('[data-argo-app*="-prod-"] .version').first.get_attribute("title")
    stack.argocd_faults(degraded_tags=[prod_version])
    try:
        expect(summary).not_to_contain_text("0 Degraded", timeout=SLOW)
        expect(summary).to_contain_text("OutOfSync")
        rm.locator("[data-matrix-legend] summary").click()
        browsing.shot(rm, "matrix-1400")
        summary.scroll_into_view_if_needed()
        rm.screenshot(path=str(SCREENSHOTS / "matrix-top-1400.png"))
    finally:
        stack.argocd_reset_faults()
    expect(rm.locator("[data-matrix-legend] summary")).to_have_text("Legend")
    app = _choose_app_behind_in_prod(rm)
    rm.goto(f"/inventory/apps/{app}/")
    lane = rm.locator("[data-pipeline-lane]")
    for env in ("dev", "stage", "prod"):
        expect(lane.locator(f'[data-stage="{env}"]')).to_be_visible()
    # stage → prod has something waiting, so exactly one Promote to prod, and it opens the preview.
    promote = lane.get_by_role("link", name="Promote to prod")
    expect(promote).to_have_count(1)
    expect(lane).to_contain_text("waiting")
    browsing.shot(rm, "app-lane-1400")
    lane.screenshot(path=str(SCREENSHOTS / "pipeline-lane-1400.png"))
    rm.set_viewport_size(PHONE)
    browsing.shot(rm, "app-lane-390")
    lane.screenshot(path=str(SCREENSHOTS / "pipeline-lane-390.png"))
    # The lane stacks its stages on a phone: none of it reaches past the screen's edge.
    right = rm.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-pipeline-lane] *')]"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert right <= PHONE["width"], right
    rm.goto("/inventory/")
    browsing.shot(rm, "matrix-390")
    rm.screenshot(path=str(SCREENSHOTS / "matrix-top-390.png"))
    rm.set_viewport_size({"width": 1400, "height": 900})
    rm.goto(f"/inventory/apps/{app}/")
    rm.locator("[data-pipeline-lane]").get_by_role("link", name="Promote to prod").click()
    expect(rm.locator("h1")).to_contain_text(f"Promote {app} from stage to prod")
    browsing.assert_clean()
