"""The promotion flow driven in-process (services called directly) against the sandbox."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from promotions import services
from promotions.models import Promotion, PromotionState
from tests.conftest import wait_for
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def test_preview_shows_one_line_diff_and_passing_gates(sandbox, users):
    app = promotable_app(sandbox)
    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    item = preview.items[0]
    print(item.plan.diff)
    print([(g.name, g.passed, g.detail) for g in preview.all_gates])
    print(item.commits[:3])
    assert preview.ok, preview.failing
    minus = [x for x in item.plan.diff.splitlines() if x.startswith("-") and not x.startswith("---")]
    plus = [x for x in item.plan.diff.splitlines() if x.startswith("+") and not x.startswith("+++")]
    assert len(minus) == 1 and len(plus) == 1


def test_full_flow_in_process(sandbox, users, purge_broker):
    """Services called one by one (the worker-driven version is in test_worker.py)."""
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    assert promotion.state == PromotionState.REQUESTED
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ship it")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.state == PromotionState.PR_OPEN
    pulls = sandbox.pulls()
    assert len(pulls) == 1
    diff = sandbox.pr_diff(promotion.pr_number)
    print(diff)
    print(next(p for p in pulls)["body"])
    changed = [x for x in diff.splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert len(changed) == 2
    sandbox.merge(promotion.pr_number)
    assert services.promotion_track(promotion_id=promotion.pk) in ("merged", "deployed", "healthy")

    def healthy():
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) == "healthy"

    try:
        wait_for(healthy, timeout=30, interval=0.5, message="promotion healthy")
    finally:
        from promotions import observed

        promotion.refresh_from_db()
        print("STATE", promotion.state, promotion.merge_commit_sha, observed.env_state(app, sandbox.prod))
    promotion.refresh_from_db()
    for field in (
        "requested_at",
        "approved_at",
        "pr_opening_at",
        "pr_opened_at",
        "merged_at",
        "syncing_at",
        "deployed_at",
        "healthy_at",
    ):
        assert getattr(promotion, field) is not None, field
    actions = list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approved",
        "promotion.pr_opened",
        "promotion.merged",
        "promotion.deployed",
        "promotion.healthy",
    ]
    assert not Promotion.objects.get(pk=promotion.pk).items.filter(active=True).exists()
