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
from tests.e2e.test_journeys import _cells, _choose_app_behind_in_prod, _pull_for, _row
from tests.e2e.test_journeys_checks import _ci

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
        apps=5,  # the last is an Argo Rollouts canary, kept for the journey that follows it
        clusters=1,
        commits=80,
        name="livesync",
        prod_sync="portal",
        rollout_apps=1,
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


def _rollout_apps(stack: LiveStack) -> set[str]:
    return {a.name for a in stack.repo.apps if a.workload == "Rollout"}


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
    app = _choose_app_behind_in_prod(rm, exclude=_PROMOTED | _rollout_apps(stack))
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
    app = _choose_app_behind_in_prod(rm, exclude=_PROMOTED | _rollout_apps(stack))
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


def _bump_stage(stack: LiveStack, app: str, version: str) -> None:
    """A new version reaches stage (auto-sync) on main: prod is behind it."""
    path = f"environments/stage/{app}/kustomization.yaml"
    status, current = stack.forge_api("GET", f"/repos/acme/gitops/contents/{path}?ref=main")
    assert status == 200, current
    text = base64.b64decode(current["content"]).decode()
    bumped = re.sub(r'newTag: "?[^"\n]+"?', f'newTag: "{version}"', text)
    bumped = re.sub(r"digest: sha256:\w+", "digest: sha256:" + "7e" * 32, bumped)
    assert bumped != text, text
    status, body = stack.forge_api(
        "PUT",
        f"/repos/acme/gitops/contents/{path}",
        {
            "message": f"{app}: {version} to stage",
            "content": base64.b64encode(bumped.encode()).decode(),
            "branch": "main",
            "sha": current["sha"],
        },
    )
    assert status in (200, 201), body


def test_a_rollout_promotion_waits_for_its_check_then_the_window_and_follows_the_canary_to_healthy(
    sync_stack: LiveStack, sync_browsing: Browsing
):
    """The done-when of issue #17 in one journey: a promotion to manual-sync prod waits for a failing
    required check, then for a closed sync window (shown), syncs when it opens and follows the
    Rollout's canary step by step to Healthy; its change record shows who merged and the sync result."""
    stack, browsing = sync_stack, sync_browsing
    app = sorted(_rollout_apps(stack))[0]
    project = next(a.team for a in stack.repo.apps if a.name == app)
    _bump_stage(stack, app, "7.7.7")
    _ci(stack, enabled=True, context="ci/validate", check_name="validate", mode="fail", delay=1)
    try:
        rm = browsing.login("release_manager")
        rm.goto(f"/inventory/?q={app}")
        # Stage runs the new version once its own canary finished (the matrix refreshes itself).
        stage = _cells(rm, app, "stage")
        expect(stage.locator(".version")).to_have_text(["7.7.7"], timeout=SLOW)
        expect(stage.locator(".badge", has_text="Healthy")).to_have_count(1, timeout=SLOW)
        promote = _row(rm, app).get_by_role("link", name="Promote to prod").first
        expect(promote).to_be_visible(timeout=SLOW)
        promote.click()
        rm.wait_for_url(re.compile(r"/promotions/new/"))
        rm.get_by_role("button", name="Request promotion").click()
        rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
        promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)
        promotion_id = int(re.search(r"/promotions/(\d+)/", promotion_path).group(1))
        approver = browsing.login("approver")
        approver.goto(promotion_path)
        approver.get_by_role("button", name="Approve").click()
        pull = wait_until(
            lambda: _pull_for(stack, f"promote/{app}/stage-to-prod/"), timeout=90, message="the PR"
        )

        # 1. The required check fails: a visible state with the run's link; not ready to merge.
        checks = rm.locator("#checks")
        failed = checks.locator("[data-checks-failed]")
        expect(failed).to_contain_text("CI failed: ci/validate", timeout=SLOW)
        expect(failed.get_by_role("link", name="ci/validate")).to_be_visible()
        expect(checks.locator("[data-ready-to-merge]")).to_have_count(0)
        browsing.shot(rm, "rollout-check-failed")
        _ci(stack, mode="auto")
        status, body = http_json(
            "POST",
            f"{stack.forge.base_url}/sandbox/ci/run",
            {"repo": "acme/gitops", "sha": pull["head"]["sha"]},
        )
        assert status == 202, body
        expect(checks.locator("[data-ready-to-merge]")).to_be_visible(timeout=SLOW)
    finally:
        _ci(stack, enabled=False, mode="auto")

    # 2. Prod is frozen when the PR merges: waiting for the window, with its opening time.
    _close_prod_window(stack, project)
    merge_sha = stack.merge_pull(pull["number"])["sha"]
    card = rm.locator("#portal-sync")
    expect(card.locator("[data-sync-waiting]")).to_contain_text(
        re.compile(r"Waiting for window, opens at \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"), timeout=SLOW
    )
    browsing.shot(rm, "rollout-waiting-for-window")

    # 3. The window opens: the portal syncs the merge commit; the canary is followed step by step.
    expect(card.locator(".badge")).to_have_text("Sync requested", timeout=WINDOW)
    rollout = rm.locator(f'#promotion-live [data-rollout="{app}"]')
    steps: list[str] = []
    deadline = time.monotonic() + SLOW / 1000
    while time.monotonic() < deadline:
        badge = (rm.locator("#promotion-live .badge").first.text_content() or "").strip()
        if rollout.count():
            text = " ".join((rollout.first.text_content() or "").split())
            found = re.search(r"step (\d) of 6", text)
            if found and (not steps or steps[-1] != found.group(0)):
                steps.append(found.group(0))
                if len(steps) == 2:
                    browsing.shot(rm, "rollout-canary-step")
        if badge == "Healthy":
            break
        time.sleep(0.5)
    expect(rm.locator("#promotion-live .badge").first).to_have_text("Healthy", timeout=SLOW)
    expect(rollout.first).to_contain_text("step 6 of 6")
    expect(rollout.first).to_contain_text("Argo CD health: Healthy")
    assert len(steps) >= 3 and steps[-1] == "step 6 of 6", steps
    browsing.shot(rm, "rollout-healthy")
    prod_apps = [n for n in stack.argocd.apps if n.startswith(f"{app}-prod-")]
    for name in prod_apps:
        assert (
            stack.argocd_app(name)["status"]["operationState"]["operation"]["sync"]["revision"] == merge_sha
        )

    # 4. Its change record: who merged (the forge's merged_by) and Argo CD's sync result.
    with stack.orm() as alias:
        from audit.models import AuditEvent, ChangeRecord

        actions = list(
            AuditEvent.objects.using(alias)
            .filter(target_type="promotion", target_id=str(promotion_id))
            .order_by("sequence")
            .values_list("action", flat=True)
        )
        record = ChangeRecord.objects.using(alias).get(
            source_type="promotion", source_id=f"{promotion_id}:{app}"
        )
    assert actions.index("promotion.checks_failed") < actions.index("promotion.checks_passed")
    assert actions.index("promotion.checks_passed") < actions.index("promotion.merged")
    assert actions[actions.index("promotion.merged") :][:3] == [
        "promotion.merged",
        "promotion.sync_waiting",
        "promotion.sync_requested",
    ]
    assert record.merged_by == "sandbox-user"
    assert record.sync_result and record.sync_result["phase"] == "Succeeded"
    browsing.assert_clean()
