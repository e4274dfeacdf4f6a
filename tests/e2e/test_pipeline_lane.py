"""The pipeline lane on the app page and the matrix summary, in Chromium at 1400 px and 390 px."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing
from tests.e2e.harness import LiveStack
from tests.e2e.test_journeys import _choose_app_behind_in_prod

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

PHONE = {"width": 390, "height": 844}


def test_release_manager_sees_the_pipeline_lane_and_the_matrix_summary(stack: LiveStack, browsing: Browsing):
    rm = browsing.login("release_manager")
    rm.goto("/inventory/")
    summary = rm.locator("[data-matrix-summary]")
    expect(summary).to_contain_text("OutOfSync")
    expect(summary).to_contain_text("Degraded")
    expect(rm.locator("[data-matrix-legend] summary")).to_have_text("Legend")
    rm.locator("[data-matrix-legend] summary").click()
    browsing.shot(rm, "matrix-1400")
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
    rm.set_viewport_size(PHONE)
    browsing.shot(rm, "app-lane-390")
    assert rm.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"] + 1
    rm.goto("/inventory/")
    browsing.shot(rm, "matrix-390")
    rm.set_viewport_size({"width": 1400, "height": 900})
    rm.goto(f"/inventory/apps/{app}/")
    rm.locator("[data-pipeline-lane]").get_by_role("link", name="Promote to prod").click()
    expect(rm.locator("h1")).to_contain_text(f"Promote {app} from stage to prod")
    browsing.assert_clean()
