"""An emergency rollback in headless Chromium: on-call asks for it, the portal merges the revert once
prod's required check passed, the exception report lists it until an approver (not the on-call
engineer) approves it after the fact, and its change record shows who merged it and Argo CD's sync
result.

config/sandbox.yaml lets prod merge emergency rollbacks (`rollback_auto_merge: true`) and requires
the sandbox CI's `ci/validate`, which the forge reports on every pull request head.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from tests.e2e.browser import Browsing
from tests.e2e.harness import LiveStack, http_json
from tests.e2e.test_journeys import JOURNEY

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000  # ms: beat polls every 2 s; the checks and the merge follow the forge's webhooks


@pytest.fixture
def ci_on(stack: LiveStack) -> Iterator[None]:
    """The sandbox CI reports `ci/validate` (a commit status) and `validate` (a check run) on every
    pull request head, passing; off again afterwards (the next files expect it off)."""

    def ci(**settings: object) -> None:
        status, body = http_json("POST", f"{stack.forge.base_url}/sandbox/ci", settings)
        assert status == 200, body

    ci(enabled=True, context="ci/validate", check_name="validate", mode="auto", delay=1)
    try:
        yield
    finally:
        ci(enabled=False, mode="auto")


def _choose_app_to_roll_back(page, stack: LiveStack) -> str:
    """An app whose prod has an earlier deployment to go back to (the form shows no plan error)."""
    taken = {JOURNEY.get("promoted", {}).get("app")}
    for app in sorted(a.name for a in stack.repo.apps):
        if app in taken:
            continue
        page.goto(f"/rollbacks/new/?app={app}&env=prod&mode=previous")
        button = page.get_by_role("button", name="Open the revert pull request")
        if button.count() and not page.locator("#rollback-form .banner-bad").count():
            return app
    pytest.fail("no app has an earlier prod deployment to roll back to")


def _emergency_exceptions(page, app: str):
    return page.locator("#exc-emergency_unapproved + .table-wrap tr.exception-row").filter(has_text=app)


def test_an_emergency_rollback_is_approved_after_the_fact_and_leaves_the_exception_report(
    stack: LiveStack, browsing: Browsing, ci_on: None
):
    oncall = browsing.login("oncall")
    app = _choose_app_to_roll_back(oncall, stack)
    expect(oncall.locator("#emergency")).to_contain_text("Available in prod")
    oncall.get_by_label("Reason").fill(f"{app} is failing its readiness checks in prod.")
    oncall.get_by_label(re.compile("Incident")).fill("INC-5151")
    oncall.get_by_label("Emergency: merge automatically once the required checks pass").check()
    oncall.get_by_label("Justification").fill("SEV1: checkout is down, no approver reachable.")
    browsing.shot(oncall, "emergency-form")
    oncall.get_by_role("button", name="Open the revert pull request").click()
    oncall.wait_for_url(re.compile(r"/rollbacks/\d+/$"))
    rollback_path = re.sub(r"^https?://[^/]+", "", oncall.url)
    rollback_id = int(re.search(r"/rollbacks/(\d+)/", rollback_path).group(1))

    # Nobody presses merge: the portal merges once ci/validate passed, then Argo CD syncs it.
    status = oncall.locator("#rollback-status")
    expect(status.locator("h2 .badge", has_text="emergency")).to_be_visible()
    expect(status.locator("h2 .badge").first).to_have_text(re.compile("healthy", re.I), timeout=SLOW)
    section = oncall.locator("#after-the-fact-approval")
    expect(section).to_contain_text("awaits an approver's after-the-fact approval")
    # The on-call engineer who asked for it cannot approve it.
    expect(oncall.get_by_role("button", name="Approve after the fact")).to_have_count(0)
    browsing.shot(oncall, "emergency-merged")
    listed = next(p for p in stack.pulls() if p["head"]["ref"].startswith(f"rollback/{app}/prod/"))
    status_code, pull = stack.forge_api("GET", f"/repos/acme/gitops/pulls/{listed['number']}")
    assert status_code == 200 and pull["merged"] and pull["merged_by"]["login"] == "portal-bot"

    # The exception report lists it until someone approves it.
    approver = browsing.login("approver")
    approver.goto("/insight/drift/")
    expect(_emergency_exceptions(approver, app)).to_have_count(1)
    expect(_emergency_exceptions(approver, app)).to_contain_text("nobody approved it")
    browsing.shot(approver, "exception-listed")

    approver.goto(rollback_path)
    approver.get_by_label("Reason (required)").fill("Reviewed the revert after SEV1: the right call.")
    approver.get_by_role("button", name="Approve after the fact").click()
    approved = approver.locator("#after-the-fact-approval")
    expect(approved).to_contain_text("Approved by approver")
    expect(approved).to_contain_text("Reviewed the revert after SEV1")
    expect(approver.get_by_role("button", name="Approve after the fact")).to_have_count(0)

    approver.goto("/insight/drift/")
    expect(approver.locator("#exc-emergency_unapproved")).to_be_visible()
    expect(_emergency_exceptions(approver, app)).to_have_count(0)
    browsing.shot(approver, "exception-cleared")

    with stack.orm() as alias:
        from audit.models import AuditEvent, ChangeRecord

        actions = list(
            AuditEvent.objects.using(alias)
            .filter(target_type="rollback", target_id=str(rollback_id))
            .order_by("sequence")
            .values_list("action", flat=True)
        )
        record = ChangeRecord.objects.using(alias).get(source_type="rollback", source_id=str(rollback_id))
    assert {"rollback.auto_merged", "rollback.merged", "rollback.approved_after_the_fact"} <= set(actions)
    assert actions.index("rollback.auto_merged") < actions.index("rollback.approved_after_the_fact")

    # The change record: who merged (the forge's word), who approved afterwards, Argo CD's sync result.
    auditor = browsing.login("auditor")
    auditor.goto(reverse("audit:change_detail", args=[record.pk]))
    who = auditor.locator("dl.kv")
    expect(who.locator("dt:has-text('Merged by') + dd")).to_have_text("portal-bot")
    expect(who.locator("dt:has-text('Approved by') + dd")).to_have_text("approver")
    expect(who.locator("dt:has-text('Approval reason') + dd")).to_contain_text("Reviewed the revert")
    sync = auditor.locator("section", has=auditor.get_by_role("heading", name="Sync operation result"))
    expect(sync.locator("pre")).to_contain_text("Succeeded")
    browsing.shot(auditor, "emergency-change-record")
    browsing.assert_clean()
