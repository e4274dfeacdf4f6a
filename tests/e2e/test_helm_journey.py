"""A Helm-values app (a multi-source Argo CD app) promoted stage → prod in headless Chromium.

Its own small live stack with one Helm-values app (`LiveStack.start(helm_apps=1)`): the matrix shows
its versions (the image tags of its values files), the preview edits `values.yaml`, the approver
reviews Argo CD's rendered diff of the pushed branch (the Deployment's image) and approves, the PR
changes one line, and prod runs the new tag after the merge.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing, slug
from tests.e2e.harness import LiveStack, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000


@pytest.fixture(scope="module")
def helm_stack(request, django_db_blocker, tmp_path_factory) -> Iterator[LiveStack]:
    failed_before = request.session.testsfailed
    stack = LiveStack.start(
        tmp_path_factory.mktemp("live-helm-stack"),
        blocker=django_db_blocker,
        apps=2,
        clusters=1,
        commits=80,
        seed=11,
        name="livehelm",
        helm_apps=1,
    )
    try:
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            stack.save_logs("helm")
        stack.stop()


@pytest.fixture
def helm_browsing(request, chromium, helm_stack: LiveStack) -> Iterator[Browsing]:
    helm_stack.check_children()
    session = Browsing(chromium, helm_stack.base_url, slug(request.node.name))
    failed_before = request.session.testsfailed
    yield session
    session.close(failed=request.session.testsfailed > failed_before)


def _cells(page: Any, app: str, env: str) -> Any:
    row = page.locator("#matrix-grid tbody tr").filter(has=page.get_by_role("link", name=app, exact=True))
    return row.locator(f'[data-argo-app^="{app}-{env}-"]')


def test_a_helm_values_app_is_promoted_on_its_rendered_diff(helm_stack: LiveStack, helm_browsing: Browsing):
    stack, browsing = helm_stack, helm_browsing
    app = next(a.name for a in stack.repo.apps if a.source == "helm")
    rm = browsing.login("release_manager")
    rm.goto(f"/inventory/?q={app}")
    stage = (_cells(rm, app, "stage").locator(".version").first.text_content() or "").strip()
    prod = (_cells(rm, app, "prod").locator(".version").first.text_content() or "").strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", stage) and re.fullmatch(r"\d+\.\d+\.\d+", prod), (stage, prod)
    if stage == prod:
        pytest.skip("the generated Helm app runs the same version in stage and prod")
    browsing.shot(rm, "helm-matrix")

    rm.goto(f"/promotions/new/?app={app}&from=stage&to=prod")
    expect(rm.locator("pre.diff")).to_contain_text(f"environments/prod/{app}/values.yaml")
    expect(rm.locator("main")).to_contain_text(f"image.tag={prod} → image.tag={stage}")
    rm.get_by_role("button", name="Request promotion").click()
    rm.wait_for_url(re.compile(r"/promotions/\d+/$"))
    promotion_path = re.sub(r"^https?://[^/]+", "", rm.url)

    approver = browsing.login("approver")
    approver.goto(promotion_path)
    for _ in range(120):
        if approver.get_by_role("button", name="Approve").count():
            break
        approver.wait_for_timeout(500)
        approver.reload()
    # Argo CD's rendering of the pushed branch: the Deployment's image changes, the checklist ran on it.
    rendered = approver.locator('[data-object-change="changed"]').first
    expect(rendered).to_be_visible(timeout=SLOW)
    expect(approver.locator("#rendered")).to_contain_text(f"image: registry.example.com/acme/{app}:{stage}")
    expect(approver.get_by_text(re.compile(r"Zero-downtime checklist \(.+\): \d+ workload"))).to_be_visible()
    browsing.shot(approver, "helm-rendered")
    approver.get_by_role("button", name="Approve").click()
    expect(approver.get_by_text(re.compile(r"approver\s+approved"))).to_be_visible()

    branch = f"promote/{app}/stage-to-prod/"

    def pull() -> dict[str, Any] | None:
        return next((p for p in stack.pulls() if p["head"]["ref"].startswith(branch)), None)

    opened = wait_until(pull, timeout=90, message=f"a PR from {branch}*")
    status, files = stack.forge_api("GET", f"/repos/acme/gitops/pulls/{opened['number']}/files")
    assert status == 200 and [f["filename"] for f in files] == [f"environments/prod/{app}/values.yaml"]
    changed = [
        x for x in files[0]["patch"].splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))
    ]
    assert changed == [f'-  tag: "{prod}"', f'+  tag: "{stage}"'], changed

    stack.merge_pull(opened["number"])
    matrix = browsing.another_page(rm, "release_manager")
    matrix.goto(f"/inventory/?q={app}")
    expect(_cells(matrix, app, "prod").locator(".version")).to_have_text([stage], timeout=SLOW)
    browsing.shot(matrix, "helm-matrix-updated")
    browsing.assert_clean()
