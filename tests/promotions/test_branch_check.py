"""A foreign push to the promotion branch before approval is caught when the approver approves.

The approval asks the forge (GET /repos/{owner}/{repo}/git/ref/heads/{branch}) that the branch is
still at the head the portal recorded; someone else's commit fails the promotion as tampered at
that moment (the same events as at PR opening), a forge error refuses the approval with nothing
recorded, and a push webhook naming the branch sends the same check without waiting.
"""

from __future__ import annotations

import json

import pytest
from celery import current_app

from audit.models import AuditEvent
from promotions import services
from promotions.models import Approval, Promotion, PromotionState
from sandbox.forge import signature
from tests.promotions.helpers import WEBHOOK_SECRET
from tests.promotions.test_head_sha import _actions, _push_as_someone_else, _request

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState


def _pushed(sandbox, users) -> Promotion:
    promotion = _request(sandbox, users)
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    return promotion


def test_a_foreign_push_before_approval_fails_the_promotion_as_tampered_when_approving(
    sandbox, users, purge_broker, tmp_path
):
    promotion = _pushed(sandbox, users)
    reviewed = promotion.pushed_head_sha
    foreign = _push_as_someone_else(sandbox, tmp_path, promotion.pr_branch)

    with pytest.raises(services.PromotionRefused, match="blocked as tampered") as refused:
        services.promotion_approve(
            promotion=promotion, actor=users["approver"], comment="lgtm", head_sha=reviewed
        )

    assert foreign[:12] in refused.value.message
    promotion.refresh_from_db()
    assert promotion.state == S.FAILED and "blocked as tampered" in promotion.failure_reason
    assert not Approval.objects.filter(promotion=promotion).exists()  # nothing recorded on it
    assert _actions(promotion) == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.branch_moved",
        "promotion.failed",
    ]
    moved = AuditEvent.objects.get(action="promotion.branch_moved", target_id=str(promotion.pk))
    assert moved.after["from_sha"] == reviewed and moved.after["to_sha"] == foreign
    assert moved.after["tampered"] is True
    assert AuditEvent.objects.get(action="promotion.failed").after["tampered"] is True
    assert sandbox.pulls() == []


def test_a_forge_error_on_the_check_refuses_the_approval_and_loses_nothing(sandbox, users, purge_broker):
    promotion = _pushed(sandbox, users)
    sandbox.fault(status=503, count=1, paths=["/git/ref/"], methods=["GET"])

    with pytest.raises(services.PromotionRetryLater, match="try again"):
        services.promotion_approve(promotion=promotion, actor=users["approver"], comment="lgtm")

    promotion.refresh_from_db()
    assert promotion.state == S.REQUESTED and not Approval.objects.exists()
    assert "promotion.approved" not in _actions(promotion)
    # The forge answers again: the same approval goes through.
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="lgtm")
    promotion.refresh_from_db()
    assert promotion.state == S.APPROVED
    assert Approval.objects.get(promotion=promotion).head_sha == promotion.pushed_head_sha


def test_the_api_answers_503_retryable_when_the_forge_cannot_be_asked(client, sandbox, users, purge_broker):
    promotion = _pushed(sandbox, users)
    sandbox.fault(status=502, count=1, paths=["/git/ref/"], methods=["GET"])
    client.force_login(users["approver"])

    resp = client.post(
        f"/api/v1/promotions/{promotion.pk}/approve",
        {"comment": "ok"},
        content_type="application/json",
    )
    assert resp.status_code == 503, resp.content
    assert resp.json()["retryable"] is True and "try again" in resp.json()["error"]
    assert not Approval.objects.exists()


def test_a_push_webhook_for_the_branch_checks_it_at_once(
    client, sandbox, users, purge_broker, tmp_path, monkeypatch
):
    promotion = _pushed(sandbox, users)
    foreign = _push_as_someone_else(sandbox, tmp_path, promotion.pr_branch)
    sent: list[tuple[str, tuple]] = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args=(), *rest, **kw: sent.append((name, tuple(args or ())))
    )

    def deliver(after: str, delivery: str):
        body = json.dumps(
            {
                "ref": f"refs/heads/{promotion.pr_branch}",
                "before": promotion.pushed_head_sha,
                "after": after,
                "repository": {"full_name": "acme/gitops"},
            }
        ).encode()
        return client.post(
            "/webhooks/forge/gitops/",
            body,
            content_type="application/json",
            HTTP_X_GITHUB_EVENT="push",
            HTTP_X_GITHUB_DELIVERY=delivery,
            HTTP_X_HUB_SIGNATURE_256=signature(WEBHOOK_SECRET, body),
        )

    # The portal's own push (its recorded head) needs no check.
    assert deliver(promotion.pushed_head_sha, "d-own").json()["branch_checks"] == []
    resp = deliver(foreign, "d-foreign")
    assert resp.status_code == 202 and resp.json()["branch_checks"] == [f"promotion:{promotion.pk}"]
    assert ("promotions.tasks.promotion_branch_verify_task", (promotion.pk,)) in sent

    assert services.promotion_branch_verify(promotion_id=promotion.pk) == "tampered"
    promotion.refresh_from_db()
    assert promotion.state == S.FAILED and "blocked as tampered" in promotion.failure_reason
    assert services.promotion_branch_verify(promotion_id=promotion.pk) == "moved-on"  # once only


def test_the_check_passes_for_the_portals_own_head(sandbox, users, purge_broker):
    promotion = _pushed(sandbox, users)
    assert services.promotion_branch_verify(promotion_id=promotion.pk) == "ok"
    promotion.refresh_from_db()
    assert promotion.state == S.REQUESTED
