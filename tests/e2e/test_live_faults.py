"""Argo CD failing under the running portal: the open matrix says "stale" and heals by itself.

The whole chain is real: beat enqueues polls every 2 s, the worker polls the emulator, the page's
htmx refresh shows the result. Nobody clicks anything and nothing is reloaded.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import Browsing
from tests.e2e.harness import LiveStack

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("e2e")]

SLOW = 90_000


def test_the_open_matrix_shows_stale_data_and_recovers_without_a_reload(stack: LiveStack, browsing: Browsing):
    """Argo CD starts answering 401 (its token expired) mid-run, then accepts it again.

    Unreachable, slow, 500 and HTML error pages are covered without a browser in tests/faults/.
    """
    from inventory.models import ArgoApplication, Deployment

    stack.argocd_reset_faults()
    page = browsing.login("viewer")
    page.goto("/inventory/")
    rows = page.locator("#matrix-grid tbody tr")
    expect(page.locator(".stale-banner")).to_have_count(0, timeout=SLOW)
    count = rows.count()
    with stack.orm() as alias:
        apps = ArgoApplication.objects.using(alias).filter(deleted_at__isnull=True).count()
        deployments = Deployment.objects.using(alias).count()
    page.evaluate("() => { window.__e2eNoReload = 'still-here' }")

    stack.argocd_faults(expire_tokens=True)
    try:
        expect(page.locator(".stale-banner")).to_be_visible(timeout=SLOW)
        expect(page.locator(".cell-item.stale").first).to_be_visible()
        expect(rows).to_have_count(count)
        browsing.shot(page, "stale")
        with stack.orm() as alias:
            assert ArgoApplication.objects.using(alias).filter(deleted_at__isnull=True).count() == apps
            assert Deployment.objects.using(alias).count() == deployments
    finally:
        stack.argocd_reset_faults()

    expect(page.locator(".stale-banner")).to_have_count(0, timeout=SLOW)
    expect(rows).to_have_count(count)
    assert page.evaluate("() => window.__e2eNoReload") == "still-here"
    browsing.shot(page, "recovered")
    browsing.assert_clean()
