"""Journey: a promotion to prod waits for its required check, shows it failed with a link, passes after a re-run.

config/sandbox.yaml makes prod require `ci/validate`; the sandbox forge's simulated CI reports it
(and an optional check run `validate`) on every pull request head. This file runs after
test_journeys.py on the same live stack; it leaves CI off and its promotion cancelled.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing
from tests.e2e.harness import LiveStack, http_json, wait_until
from tests.e2e.test_journeys import _choose_app_behind_in_prod, _pull_for, _row

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000  # ms


def _ci(stack: LiveStack, **settings: Any) -> None:
    status, body = http_json("POST", f"{stack.forge.base_url}/sandbox/ci", settings)
    assert status == 200, body


def _actions(stack: LiveStack, promotion_id: int) -> list[str]:
    from audit.models import AuditEvent

    with stack.orm() as alias:
        return list(
            AuditEvent.objects.using(alias)
            .filter(target_type="promotion", target_id=str(promotion_id))
            .order_by("sequence")
            .values_list("action", flat=True)
        )


def test_a_promotion_waits_for_a_failing_required_check_then_passes_after_a_fix(
    stack: LiveStack, browsing: Browsing
):
    # Every new head fails CI until the fix: the portal's own PR commit carries no [fail-ci] marker.
    _ci(stack, enabled=True, context="ci/validate", check_name="validate", mode="fail", delay=1)
    rm = browsing.login("release_manager")
    promotion_path = ""
    try:
        app = _choose_app_behind_in_prod(rm)
        _row(rm, app).get_by_role("link", name="Promote to prod").first.click()
        rm.wait_for_url(re.compile(r"/promotions/new/"))
        rm.get_by_label("Note for the approvers").fill("Checks journey (e2e).")
        rm.get_by_role("button", name="Request promotion").click()
        rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
        promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)
        promotion_id = int(re.search(r"/promotions/(\d+)/", promotion_path).group(1))

        approver = browsing.login("approver")
        approver.goto(promotion_path)
        approver.get_by_role("button", name="Approve").click()
        expect(approver.get_by_text(re.compile(r"approver\s+approved"))).to_be_visible()

        pull = wait_until(
            lambda: _pull_for(stack, f"promote/{app}/stage-to-prod/"), timeout=90, message="the PR"
        )
        # The checks panel appears with the PR and follows CI by itself: failed, with the run's link.
        checks = rm.locator("#checks")
        expect(checks).to_be_visible(timeout=SLOW)
        failed = checks.locator("[data-checks-failed]")
        expect(failed).to_be_visible(timeout=SLOW)
        expect(failed).to_contain_text("CI failed: ci/validate")
        link = failed.get_by_role("link", name="ci/validate")
        href = link.get_attribute("href") or ""
        assert href.startswith(stack.forge.base_url) and f"/commit/{pull['head']['sha']}" in href, href
        required = checks.locator('tr[data-check="ci/validate"]')
        expect(required).to_contain_text("required")
        expect(required).to_contain_text("failed")
        expect(checks.locator('tr[data-check="validate"]')).to_contain_text("optional")
        expect(checks.locator("[data-ready-to-merge]")).to_have_count(0)
        # Tracking records it: the state badge of the request and the list say so too.
        expect(rm.locator("#promotion-live [data-checks-badge]")).to_have_text(
            "CI failed: ci/validate", timeout=SLOW
        )
        browsing.shot(rm, "checks-failed")
        run_page = browsing.another_page(rm, "release_manager")
        run_page.goto(href)
        expect(run_page.get_by_role("heading", name="Checks")).to_be_visible()
        expect(run_page.locator("main")).to_contain_text("ci/validate")
        run_page.goto("/promotions/")
        expect(run_page.locator(f'a[href="{promotion_path}"]').locator("xpath=ancestor::tr")).to_contain_text(
            "CI failed: ci/validate"
        )

        # The fix: CI back to its marker rule and a re-run on the same head (a commit of anyone else's
        # on the portal's branch would void the approval: the branch is the portal's own).
        _ci(stack, mode="auto")
        status, body = http_json(
            "POST",
            f"{stack.forge.base_url}/sandbox/ci/run",
            {"repo": "acme/gitops", "sha": pull["head"]["sha"]},
        )
        assert status == 202, body
        expect(checks.locator("[data-ready-to-merge]")).to_be_visible(timeout=SLOW)
        expect(checks.locator("[data-checks-state]")).to_have_text("Checks passed")
        expect(checks.locator('tr[data-check="ci/validate"]')).to_contain_text("passed")
        expect(rm.locator("#promotion-live [data-checks-badge]")).to_have_text("checks passed", timeout=SLOW)
        browsing.shot(rm, "checks-passed")
        actions = wait_until(
            lambda: (a := _actions(stack, promotion_id)) and "promotion.checks_passed" in a and a,
            timeout=60,
            message="promotion.checks_passed in the ledger",
        )
        assert actions.index("promotion.checks_failed") < actions.index("promotion.checks_passed")
        browsing.assert_clean()
    finally:
        _ci(stack, enabled=False, mode="auto")
        if promotion_path:
            rm.goto(promotion_path)
            rm.once("dialog", lambda dialog: dialog.accept())
            rm.get_by_role("button", name="Cancel promotion").click()
            expect(rm.locator("#promotion-live .badge").first).to_have_text("Cancelled", timeout=SLOW)
