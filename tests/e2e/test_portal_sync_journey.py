"""A promotion to a manual-sync prod (`sync: portal`) that waits for a closed sync window, shown on
its page, and is synced by the portal once the window opens; in headless Chromium.

Its own live stack (prod without Argo CD auto-sync, SANDBOX_PROD_SYNC=portal), smaller than the
package's: database `<db>_livesync_<worker>`, the Redis index after the package stack's.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing, slug
from tests.e2e.harness import LiveStack, http_json, wait_until
from tests.e2e.test_journeys import _choose_app_behind_in_prod, _pull_for, _row

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000
WINDOW = 180_000  # ms: the window opens within two minutes, the beat sweeper syncs within seconds


# The tests share one live stack: an app an earlier test promoted may still show behind while its
# promotion is in flight (a second request for it is refused), so each test takes another app.
_PROMOTED: set[str] = set()


@pytest.fixture(scope="module")
def sync_stack(request, django_db_blocker, tmp_path_factory) -> Iterator[LiveStack]:
    failed_before = request.session.testsfailed
    stack = LiveStack.start(
        tmp_path_factory.mktemp("live-sync-stack"),
        blocker=django_db_blocker,
        apps=4,
        clusters=1,
        commits=80,
        name="livesync",
        prod_sync="portal",
    )
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            stack.save_logs("portal-sync")
        stack.stop()


@pytest.fixture
def sync_browsing(request, chromium, sync_stack: LiveStack) -> Iterator[Browsing]:
    sync_stack.check_children()
    session = Browsing(chromium, sync_stack.base_url, slug(request.node.name))
    failed_before = request.session.testsfailed
    yield session
    session.close(failed=request.session.testsfailed > failed_before)


def _close_prod_window(stack: LiveStack, project: str) -> None:
    """A deny window on the prod clusters that opened this minute and lasts two (Argo CD's minutes)."""
    if datetime.now(UTC).second > 45:  # leave the merge and the first sync attempt inside the window
        time.sleep(61 - datetime.now(UTC).second)
    status, body = http_json(
        "POST", f"{stack.argocd.base_url}/sandbox/sync-windows", {"project": project, "closed_for": 120}
    )
    assert status == 200, body


def test_a_promotion_to_manual_sync_prod_waits_for_the_window_then_syncs(
    sync_stack: LiveStack, sync_browsing: Browsing
):
    stack, browsing = sync_stack, sync_browsing
    rm = browsing.login("release_manager")
    app = _choose_app_behind_in_prod(rm, exclude=_PROMOTED)
    _PROMOTED.add(app)
    project = next(a.team for a in stack.repo.apps if a.name == app)
    _row(rm, app).get_by_role("link", name="Promote to prod").first.click()
    rm.wait_for_url(re.compile(r"/promotions/new/"))
    rm.get_by_role("button", name="Request promotion").click()
    rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
    promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)
    promotion_id = int(re.search(r"/promotions/(\d+)/", promotion_path).group(1))

    approver = browsing.login("approver")
    approver.goto(promotion_path)
    approver.get_by_role("button", name="Approve").click()
    branch = f"promote/{app}/stage-to-prod/"
    pull = wait_until(lambda: _pull_for(stack, branch), timeout=90, message=f"a PR from {branch}*")

    # Prod is frozen when the PR merges: the page says so, with the opening time.
    _close_prod_window(stack, project)
    merge_sha = stack.merge_pull(pull["number"])["sha"]
    card = rm.locator("#portal-sync")
    expect(card.locator("[data-sync-waiting]")).to_contain_text(
        re.compile(r"Waiting for window, opens at \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"), timeout=SLOW
    )
    expect(card.locator(".badge")).to_have_text("Waiting for a sync window")
    expect(rm.locator("#promotion-live .badge").first).to_have_text("Merged")
    browsing.shot(rm, "waiting-for-window")
    with stack.orm() as alias:
        from promotions.models import Promotion

        waiting = Promotion.objects.using(alias).get(pk=promotion_id)
        assert waiting.sync_state == "waiting" and waiting.sync_opens_at is not None
    argo_name = f"{app}-prod-"
    prod_apps = [n for n in stack.argocd.apps if n.startswith(argo_name)]
    assert prod_apps and all(stack.argocd.apps[n].synced.revision != merge_sha for n in prod_apps)
    # The approver may override (the form is theirs); the requester's page has none.
    approver.goto(promotion_path)
    expect(approver.get_by_role("button", name="Override the window and sync")).to_be_visible()
    expect(rm.get_by_role("button", name="Override the window and sync")).to_have_count(0)

    # The window opens: the beat sweeper sends the sync with the merge commit, then Healthy.
    expect(card.locator(".badge")).to_have_text("Sync requested", timeout=WINDOW)
    expect(rm.locator("#promotion-live .badge").first).to_have_text("Healthy", timeout=SLOW)
    browsing.shot(rm, "synced-after-window")
    for name in prod_apps:
        operation = stack.argocd_app(name)["status"]["operationState"]["operation"]
        assert operation["sync"]["revision"] == merge_sha
        assert operation["initiatedBy"].get("automated") is not True
    with stack.orm() as alias:
        from audit.models import AuditEvent

        actions = list(
            AuditEvent.objects.using(alias)
            .filter(target_type="promotion", target_id=str(promotion_id))
            .order_by("sequence")
            .values_list("action", flat=True)
        )
    assert actions[actions.index("promotion.merged") :] == [
        "promotion.merged",
        "promotion.sync_waiting",
        "promotion.sync_requested",
        "promotion.deployed",
        "promotion.healthy",
    ]
    browsing.assert_clean()


def _drop_readiness_probe_on_main(stack: LiveStack, app: str) -> str:
    """Someone merges a base change that drops the app's readiness probe (every overlay inherits it)."""
    listing_status, listing = stack.forge_api("GET", f"/repos/acme/gitops/contents/apps/{app}/base?ref=main")
    assert listing_status == 200, listing
    path = next(
        entry["path"]
        for entry in listing
        if entry["name"] in ("deployment.yaml", "rollout.yaml", "statefulset.yaml")
    )
    status, current = stack.forge_api("GET", f"/repos/acme/gitops/contents/{path}?ref=main")
    assert status == 200, current
    lines = base64.b64decode(current["content"]).decode().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "readinessProbe:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    text = "".join(lines[:start] + lines[end:])
    status, body = stack.forge_api(
        "PUT",
        f"/repos/acme/gitops/contents/{path}",
        {
            "message": f"{app}: simplify the pod spec",
            "content": base64.b64encode(text.encode()).decode(),
            "branch": "main",
            "sha": current["sha"],
        },
    )
    assert status in (200, 201), body
    return path


def test_an_approver_refuses_a_change_whose_rendered_diff_drops_the_readiness_probe(
    sync_stack: LiveStack, sync_browsing: Browsing
):
    """Prod (manual sync) still runs the probe; Argo CD's rendering of the pushed head shows it gone."""
    stack, browsing = sync_stack, sync_browsing
    rm = browsing.login("release_manager")
    app = _choose_app_behind_in_prod(rm, exclude=_PROMOTED)
    _PROMOTED.add(app)
    _drop_readiness_probe_on_main(stack, app)
    _row(rm, app).get_by_role("link", name="Promote to prod").first.click()
    rm.wait_for_url(re.compile(r"/promotions/new/"))
    rm.get_by_role("button", name="Request promotion").click()
    rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
    promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)
    promotion_id = int(re.search(r"/promotions/(\d+)/", promotion_path).group(1))

    approver = browsing.login("approver")
    approver.goto(promotion_path)
    # The rendered diff of exactly the pushed head: the Deployment changes, its readiness probe is gone.
    rendered = approver.locator("#rendered")
    expect(rendered.locator(".diff .del", has_text="readinessProbe").first).to_be_attached(timeout=SLOW)
    expect(approver.locator("ul.gates").first).to_contain_text("eadiness", timeout=SLOW)
    browsing.shot(approver, "rendered-diff-drops-probe")
    approver.locator("details.reject summary").click()
    approver.get_by_label(re.compile("Reason")).fill(
        "The rendered diff drops the readiness probe: pods would take traffic cold."
    )
    approver.once("dialog", lambda dialog: dialog.accept())
    approver.get_by_role("button", name="Reject promotion").click()
    expect(approver.locator("#promotion-live .badge").first).to_have_text("Rejected", timeout=SLOW)
    browsing.shot(approver, "rejected")
    with stack.orm() as alias:
        from audit.models import AuditEvent
        from promotions.models import Promotion

        promotion = Promotion.objects.using(alias).get(pk=promotion_id)
        assert promotion.state == "rejected"
        rejected = AuditEvent.objects.using(alias).get(
            action="promotion.rejected", target_id=str(promotion_id)
        )
        assert "readiness probe" in rejected.message + str(rejected.after)
    assert not [p for p in stack.pulls() if p["head"]["ref"].startswith(f"promote/{app}/")]
    browsing.assert_clean()
