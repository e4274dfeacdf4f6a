"""The three user journeys in headless Chromium against the live stack.

Release manager → approver → forge merge → Argo CD sync → the matrix updates by itself; then on-call
rolls the same app back when prod turns Degraded; then an auditor finds, exports and verifies the
evidence. The journeys build on each other (the rollback undoes the promotion, the auditor reads
both), so they share ``JOURNEY`` and run in file order on one xdist worker.
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing, axe_violations
from tests.e2e.harness import LiveStack, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000  # ms: beat polls every 2 s, the matrix refreshes itself every 15 s
JOURNEY: dict[str, Any] = {}


def _row(page: Any, app: str) -> Any:
    return page.locator("#matrix-grid tbody tr").filter(has=page.get_by_role("link", name=app, exact=True))


def _cells(page: Any, app: str, env: str) -> Any:
    return _row(page, app).locator(f'[data-argo-app^="{app}-{env}-"]')


def _pull_for(stack: LiveStack, branch_prefix: str) -> dict[str, Any] | None:
    pulls = [p for p in stack.pulls() if p["head"]["ref"].startswith(branch_prefix)]
    assert len(pulls) <= 1, f"more than one pull request for {branch_prefix}: {pulls}"
    return pulls[0] if pulls else None


def _no_reload_marker(page: Any) -> None:
    page.evaluate("() => { window.__e2eNoReload = 'still-here' }")


def _was_not_reloaded(page: Any) -> bool:
    return page.evaluate("() => window.__e2eNoReload") == "still-here"


def _choose_app_behind_in_prod(page: Any, exclude: frozenset[str] | set[str] = frozenset()) -> str:
    """The first app whose prod runs behind stage while stage is Synced and Healthy (not in `exclude`)."""
    rows = page.locator("#matrix-grid tbody tr").filter(
        has=page.locator(".behind", has_text=re.compile(r"\b[1-9]\d* commits? behind stage"))
    )
    expect(rows.first).to_be_visible()
    for index in range(rows.count()):
        row = rows.nth(index)
        app = (row.locator("th a").first.text_content() or "").strip()
        if app in exclude:
            continue
        stage = _cells(page, app, "stage")
        text = " ".join(stage.all_text_contents())
        if "Synced" in text and "Healthy" in text and "Degraded" not in text:
            return app
    pytest.fail("no application is behind in prod with a healthy stage")


def test_release_manager_promotes_to_prod_and_the_matrix_follows(stack: LiveStack, browsing: Browsing):
    rm = browsing.login("release_manager")
    expect(rm.get_by_role("heading", name="What runs where")).to_be_visible()
    browsing.shot(rm, "matrix")
    app = _choose_app_behind_in_prod(rm)
    prod_before = (_cells(rm, app, "prod").locator(".version").first.text_content() or "").strip()

    # The preview: commits, the exact diff, versions before → after, the gates.
    _row(rm, app).get_by_role("link", name="Promote to prod").first.click()
    rm.wait_for_url(re.compile(r"/promotions/new/"))
    expect(
        rm.get_by_role("heading", name=re.compile(rf"Promote {re.escape(app)} from stage to prod"))
    ).to_be_visible()
    expect(rm.get_by_role("heading", name="Gates").first).to_be_visible()
    expect(rm.get_by_role("heading", name="Pull request diff")).to_be_visible()
    expect(rm.get_by_role("heading", name="Commits that will reach prod")).to_be_visible()
    expect(rm.locator("pre.diff")).to_contain_text(f"environments/prod/{app}/kustomization.yaml")
    expect(rm.locator(".banner-bad")).to_have_count(0)
    versions = re.search(r"Versions\s+(\S+)\s+→\s+(\S+)", rm.locator("main").inner_text())
    assert versions, "the preview shows no 'before → after' versions"
    before, after = versions.group(1), versions.group(2)
    assert before == prod_before and after != before
    browsing.shot(rm, "preview")

    rm.get_by_label("Note for the approvers").fill("Release train of the week (e2e).")
    rm.get_by_role("button", name="Request promotion").click()
    rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
    promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)
    promotion_id = int(re.search(r"/promotions/(\d+)/", promotion_path).group(1))
    expect(rm.locator("#promotion-live .badge").first).to_have_text("Requested")
    expect(rm.get_by_text("You requested this promotion: someone else must approve it.")).to_be_visible()
    browsing.shot(rm, "requested")

    # Four eyes: the approver signs in and approves.
    approver = browsing.login("approver")
    approver.goto(promotion_path)
    # The worker pushes the promotion branch on the request: the form appears once it is on the forge,
    # naming the commit the approval binds to.
    for _ in range(120):
        if approver.get_by_role("button", name="Approve").count():
            break
        approver.wait_for_timeout(500)
        approver.reload()
    expect(approver.get_by_text("You approve commit")).to_be_visible()
    approver.get_by_label("Comment").fill("Diff and gates reviewed.")
    approver.get_by_role("button", name="Approve").click()
    expect(approver.get_by_text(re.compile(r"approver\s+approved"))).to_be_visible()
    browsing.shot(approver, "approved")

    # The Celery worker opens the PR on the sandbox forge; the page follows it by itself.
    branch = f"promote/{app}/stage-to-prod/"
    pull = wait_until(lambda: _pull_for(stack, branch), timeout=90, message=f"a PR from {branch}*")
    expect(rm.get_by_role("link", name=f"Pull request #{pull['number']}")).to_be_visible(timeout=SLOW)
    # The requester's page, never reloaded, follows the approval too (swapped out of band by the poll).
    expect(rm.locator("#promotion-actions h2").first).to_contain_text(
        re.compile(r"\(1 of \d+\)"), timeout=SLOW
    )
    expect(rm.locator("#promotion-actions")).to_contain_text(re.compile(r"approver\s+approved"))
    status, files = stack.forge_api("GET", f"/repos/acme/gitops/pulls/{pull['number']}/files")
    assert status == 200
    assert [f["filename"] for f in files] == [f"environments/prod/{app}/kustomization.yaml"]
    patch = files[0]["patch"].splitlines()
    changed = [line for line in patch if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert len(changed) == 2, f"the PR should change one line: {changed}"
    assert re.fullmatch(rf'\+\s+newTag: "?{re.escape(after)}"?', changed[1]), changed

    # The release manager watches the matrix while the PR is merged and Argo CD syncs.
    matrix = browsing.another_page(rm, "release_manager")
    matrix.goto(f"/inventory/?q={app}")
    expect(_cells(matrix, app, "prod").locator(".version")).to_have_text([before, before])
    _no_reload_marker(matrix)
    merged = stack.merge_pull(pull["number"])
    merge_sha = merged["sha"]
    prod = _cells(matrix, app, "prod")
    expect(prod.locator(".version")).to_have_text([after, after], timeout=SLOW)
    expect(prod.locator(".sha")).to_have_text([merge_sha[:8], merge_sha[:8]], timeout=SLOW)
    expect(prod.locator(".badge", has_text="Healthy")).to_have_count(2, timeout=SLOW)
    assert _was_not_reloaded(matrix), "the matrix was reloaded instead of refreshed in place"
    browsing.shot(matrix, "matrix-updated")

    # The promotion page ends Healthy with every step stamped.
    expect(rm.locator("#promotion-live .badge").first).to_have_text("Healthy", timeout=SLOW)
    steps = rm.locator("ol.timeline > li")
    labels = [t.strip() for t in steps.locator("span:first-child").all_inner_texts()]
    assert len(labels) >= 7, labels
    expect(steps.locator("span.done")).to_have_count(len(labels))
    # Nothing left to cancel on a finished promotion, without a reload.
    expect(rm.get_by_role("button", name="Cancel promotion")).to_have_count(0)
    for when in steps.locator("span:last-child").all_inner_texts():
        assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", when.strip()), labels
    browsing.shot(rm, "healthy")

    from promotions.models import Promotion

    with stack.orm() as alias:
        promotion = Promotion.objects.using(alias).get(pk=promotion_id)
        assert promotion.state == "healthy"
        assert promotion.pr_number == pull["number"]
    assert len([p for p in stack.pulls() if p["head"]["ref"].startswith(branch)]) == 1
    browsing.assert_clean()
    JOURNEY["promoted"] = {
        "app": app,
        "before": before,
        "after": after,
        "promotion": promotion_path,
        "merge_sha": merge_sha,
    }


def test_oncall_rolls_back_a_degraded_prod_from_the_matrix(stack: LiveStack, browsing: Browsing):
    promoted = JOURNEY.get("promoted")
    if promoted is None:
        pytest.skip("needs the release manager journey's promotion to roll back")
    app, before, after = promoted["app"], promoted["before"], promoted["after"]

    stack.argocd_faults(degraded_tags=[after])
    oncall = browsing.login("oncall")
    oncall.goto(f"/inventory/?q={app}")
    _no_reload_marker(oncall)
    prod = _cells(oncall, app, "prod")
    expect(prod.locator(".badge", has_text="Degraded")).to_have_count(2, timeout=SLOW)
    assert _was_not_reloaded(oncall)
    browsing.shot(oncall, "degraded")

    prod.first.get_by_role("link", name="Roll back").click()
    oncall.wait_for_url(re.compile(r"/rollbacks/new/"))
    expect(oncall.get_by_role("heading", name=f"Roll back {app} in prod")).to_be_visible()
    expect(oncall.locator("#preview")).to_contain_text(f"version {before}")
    expect(oncall.get_by_role("heading", name="Commits to revert (newest first)")).to_be_visible()
    oncall.get_by_label("Reason").fill(f"{after} is Degraded in prod: error rate up.")
    oncall.get_by_label(re.compile("Incident")).fill("INC-4242")
    browsing.shot(oncall, "rollback-form")
    oncall.get_by_role("button", name="Open the revert pull request").click()
    oncall.wait_for_url(re.compile(r"/rollbacks/\d+/$"))
    rollback_path = re.sub(r"^https?://[^/]+", "", oncall.url)

    branch = f"rollback/{app}/prod/"
    pull = wait_until(lambda: _pull_for(stack, branch), timeout=90, message=f"a revert PR from {branch}*")
    assert pull["title"].startswith("Revert")
    expect(oncall.get_by_role("link", name=f"#{pull['number']}")).to_be_visible(timeout=SLOW)
    stack.merge_pull(pull["number"])

    status = oncall.locator("#rollback-status")
    expect(status.locator("h2 .badge").first).to_have_text(re.compile("healthy", re.I), timeout=SLOW)
    expect(status.locator("dd", has=oncall.locator("strong"))).to_contain_text(re.compile(r"\d"))
    expect(status).not_to_contain_text("not restored yet")
    browsing.shot(oncall, "restored")

    oncall.goto(f"/inventory/?q={app}")
    prod = _cells(oncall, app, "prod")
    expect(prod.locator(".version")).to_have_text([before, before], timeout=SLOW)
    expect(prod.locator(".badge", has_text="Healthy")).to_have_count(2, timeout=SLOW)
    browsing.shot(oncall, "matrix-restored")
    assert len([p for p in stack.pulls() if p["head"]["ref"].startswith(branch)]) == 1
    browsing.assert_clean()
    JOURNEY["rolled_back"] = {"rollback": rollback_path}


def _edit_one_line(bundle: Path, target: Path) -> None:
    """Copy the bundle with one character changed in the first event of events.jsonl."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("events.jsonl"):
                lines = data.decode().splitlines(keepends=True)
                lines[0] = (
                    lines[0]
                    .replace('"message": "', '"message": "X', 1)
                    .replace('"message":"', '"message":"X', 1)
                )
                assert lines[0].encode() != data.splitlines(keepends=True)[0], "nothing edited"
                data = "".join(lines).encode()
            dst.writestr(info, data)


def test_auditor_filters_exports_and_verifies_the_signed_bundle(
    stack: LiveStack, browsing: Browsing, tmp_path: Path
):
    if "promoted" not in JOURNEY:
        pytest.skip("needs the release manager journey's change to audit")
    app = JOURNEY["promoted"]["app"]
    auditor = browsing.login("auditor", accept_downloads=True)
    auditor.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(auditor.get_by_role("heading", name="Audit trail")).to_be_visible()

    since = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    auditor.get_by_label("From (UTC)").fill(since)
    auditor.get_by_label("Environment").fill("prod")
    auditor.get_by_role("button", name="Filter").click()
    auditor.wait_for_url(re.compile(r"env=prod"))
    table = auditor.locator("#audit-table")
    expect(table).to_contain_text("promotion.requested")
    expect(table).to_contain_text("promotion.approved")
    expect(table).to_contain_text(app)
    browsing.shot(auditor, "audit-filtered")

    # The change record: who asked, who approved, which PR, when it was healthy.
    auditor.goto(f"/audit/changes/?since={since}&env=prod&app={app}")
    expect(auditor.get_by_role("heading", name="Change records")).to_be_visible()
    auditor.locator("#audit-table").get_by_role("link", name=re.compile("Promotion", re.I)).first.click()
    auditor.wait_for_url(re.compile(r"/audit/changes/\d+/"))
    record = auditor.locator("main")
    expect(record).to_contain_text("release_manager")
    expect(record).to_contain_text("approver")
    expect(record).to_contain_text(re.compile(r"#\d+"))
    browsing.shot(auditor, "change-record")

    # Exports with the same filters: the CSV and the signed bundle.
    auditor.goto(f"/audit/?since={since}&env=prod")
    with auditor.expect_download() as download:
        auditor.get_by_role("button", name="CSV", exact=True).click()
    csv_path = tmp_path / download.value.suggested_filename
    download.value.save_as(csv_path)
    csv_text = csv_path.read_text()
    assert "promotion.approved" in csv_text and app in csv_text
    with auditor.expect_download() as download:
        auditor.get_by_role("button", name="Signed bundle (zip)").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    names = zipfile.ZipFile(io.BytesIO(bundle.read_bytes())).namelist()
    assert any(n.endswith("events.jsonl") for n in names) and any(n.endswith("manifest.json") for n in names)

    ok = stack.manage("audit_verify", str(bundle), check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tampered = tmp_path / "tampered.zip"
    _edit_one_line(bundle, tampered)
    bad = stack.manage("audit_verify", str(tampered), check=False)
    assert bad.returncode != 0, bad.stdout + bad.stderr
    browsing.assert_clean()


def test_pages_work_with_the_keyboard_alone(stack: LiveStack, browsing: Browsing):
    page = browsing.new_page("release_manager")
    page.goto("/accounts/login/")

    def tab_to(predicate: str, limit: int = 200) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(predicate):
                return
        pytest.fail(f"Tab never reached {predicate}")

    tab_to("() => document.activeElement && document.activeElement.id === 'id_username'")
    page.keyboard.type("release_manager")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "id_password"
    page.keyboard.type("demo")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/inventory/"))

    # The first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    tab_to("() => (document.activeElement.textContent || '').trim() === 'Promote to prod'", limit=400)
    focus_style = page.evaluate(
        """() => { const s = getComputedStyle(document.activeElement);
                   return {outline: s.outlineStyle, width: s.outlineWidth, shadow: s.boxShadow}; }"""
    )
    assert focus_style["outline"] != "none" or focus_style["shadow"] != "none", focus_style
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/promotions/new/"))
    expect(page.get_by_role("button", name="Request promotion")).to_be_visible()
    browsing.assert_clean()


def test_pages_pass_the_axe_core_accessibility_check(stack: LiveStack, browsing: Browsing, axe_source: str):
    pages = {
        "release_manager": ["/inventory/", "/promotions/", "/rollbacks/"],
        "auditor": ["/audit/", "/audit/changes/"],
    }
    app = JOURNEY.get("promoted", {}).get("app")
    if app:
        pages["release_manager"] += [
            f"/inventory/apps/{app}/",
            f"/promotions/new/?app={app}&from=dev&to=stage",
            JOURNEY["promoted"]["promotion"],
        ]
        pages["oncall"] = [f"/rollbacks/new/?app={app}&env=prod"]
        if "rolled_back" in JOURNEY:
            pages["oncall"].append(JOURNEY["rolled_back"]["rollback"])
    found: dict[str, list[dict[str, Any]]] = {}
    anonymous = browsing.new_page()
    anonymous.goto("/accounts/login/")
    found["/accounts/login/"] = axe_violations(anonymous, axe_source)
    for user, paths in pages.items():
        page = browsing.login(user)
        for path in paths:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            found[path] = axe_violations(page, axe_source)
    serious = {path: v for path, v in found.items() if v}
    assert not serious, "serious or critical accessibility violations:\n" + "\n".join(
        f"{path}: {v['id']} ({v['impact']}) {v['help']}: {v['nodes']}"
        for path, vs in serious.items()
        for v in vs
    )
    browsing.assert_clean()
