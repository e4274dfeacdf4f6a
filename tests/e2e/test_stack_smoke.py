"""The live stack starts and serves the sandbox: the matrix lists what the emulated Argo CD runs."""

from __future__ import annotations

import pytest

from tests.e2e.harness import http_json

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.slow]


def test_stack_serves_the_polled_sandbox(stack):
    from inventory.models import ArgoApplication

    status, _ = http_json("GET", stack.url("/healthz"))
    assert status == 200
    with stack.orm() as alias:
        assert ArgoApplication.objects.using(alias).count() == 8 * 3 * 2
    assert isinstance(stack.pulls(), list)  # the forge answers the portal's bot
    assert stack.argocd_app(f"{stack.repo.apps[0].name}-{stack.repo.clusters[0].name}")["metadata"]
