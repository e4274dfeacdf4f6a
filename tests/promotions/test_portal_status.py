"""The portal's own commit status (`gitops-portal/gates`) on a promotion's head, on the real sandbox forge.

Branch protection requires it, so the forge merges only what the portal approved: pending while the
approval is outstanding, success once approved with every gate passing, failure when a blocking gate
fails. Posted once per verdict; a 5xx is retried, a 403 is shown and never fails the promotion.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEvent
from changes.pullrequests import PullRequestRetryable
from promotions import services
from promotions.models import Promotion
from promotions.pullrequests import promotion_gates_on_rendering
from tests.conftest import wait_for
from tests.promotions.helpers import promotable_app
from tests.promotions.test_rendered_pages import _broken_commit
from tests.sandbox_fixtures import FORGE_TOKEN

pytestmark = pytest.mark.django_db
CONTEXT = "gitops-portal/gates"


def _statuses(sandbox, sha: str) -> list[dict[str, Any]]:
    """Every status of the portal's context at `sha`, newest first (each POST adds one)."""
    resp = requests.get(
        f"{sandbox.forge.base_url}/repos/acme/gitops/commits/{sha}/statuses",
        headers={"Authorization": f"Bearer {FORGE_TOKEN}"},
        params={"per_page": 100},
        timeout=10,
    )
    resp.raise_for_status()
    return [s for s in resp.json() if s["context"] == CONTEXT]


def _requested(sandbox, users, *, required: list[str] | None = None) -> Promotion:
    if required is not None:
        sandbox.prod.required_checks = required
        sandbox.prod.save(update_fields=["required_checks"])
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    return promotion


def test_pending_at_the_request_success_once_approved_and_posted_once_per_state(
    sandbox, users, client, settings, purge_broker
):
    settings.PORTAL_BASE_URL = "https://portal.example.com/"
    promotion = _requested(sandbox, users)
    head = promotion.pushed_head_sha

    (pending,) = _statuses(sandbox, head)
    assert pending["state"] == "pending" and "approval" in pending["description"].lower()
    assert pending["target_url"] == f"https://portal.example.com/promotions/{promotion.pk}/"
    assert pending["creator"]["login"] == "portal-bot"
    assert (promotion.portal_status_state, promotion.portal_status_sha) == ("pending", head)

    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pr_head_sha == head
    success, _ = _statuses(sandbox, head)
    assert success["state"] == "success" and len(success["description"]) <= 140
    assert "all blocking gates passed" in success["description"]

    # Tracking ticks, task retries and repeated publishes post nothing new.
    for _ in range(3):
        services.promotion_track(promotion_id=promotion.pk)
        assert services.promotion_status_publish(promotion_id=promotion.pk) == "unchanged"
    assert [s["state"] for s in _statuses(sandbox, head)] == ["success", "pending"]

    client.force_login(users["viewer"])
    html = client.get(promotion.get_absolute_url()).content.decode()
    assert 'data-portal-status="success"' in html and f"<code>{CONTEXT}</code>" in html


def test_the_portal_status_is_not_a_required_check_of_its_own(sandbox, users, purge_broker):
    """`any` means everything the forge reports, but the portal's own verdict: it never waits on itself."""
    promotion = _requested(sandbox, users, required=["any", CONTEXT])
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert _statuses(sandbox, promotion.pr_head_sha)[0]["state"] == "success"

    services.promotion_track(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.checks_verdict == "waiting" and "none reported" in promotion.checks_detail
    assert all(c["name"] != CONTEXT for c in promotion.checks)

    check = {
        "repo": "acme/gitops",
        "sha": promotion.pr_head_sha,
        "context": "ci/validate",
        "state": "success",
    }
    requests.post(f"{sandbox.forge.base_url}/sandbox/checks", json=check, timeout=10).raise_for_status()
    services.promotion_track(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.checks_verdict == "success"
    assert [c["name"] for c in promotion.checks] == ["ci/validate"]


def test_failure_when_argo_cd_cannot_render_the_head(sandbox, users, tmp_path, purge_broker):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    broken = _broken_commit(sandbox, app, tmp_path)
    Promotion.objects.filter(pk=promotion.pk).update(
        pr_branch="broken", pushed_head_sha=broken, branch_pushed_at=timezone.now()
    )
    promotion_gates_on_rendering(promotion_id=promotion.pk)

    assert services.promotion_status_publish(promotion_id=promotion.pk) == "posted"

    (failure,) = _statuses(sandbox, broken)
    assert failure["state"] == "failure"
    assert failure["description"].startswith("Blocked: Rendered by Argo CD: Argo CD cannot render")
    assert len(failure["description"]) <= 140
    # An approver's override does not apply to a render failure: the PR opening fails it, still failure.
    Promotion.objects.filter(pk=promotion.pk).update(state="approved", approved_at=timezone.now())
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.state == "failed"
    newest = _statuses(sandbox, broken)[0]
    assert newest["state"] == "failure" and newest["description"].startswith("Failed in the GitOps Portal")


def test_a_refused_token_is_shown_and_never_fails_the_promotion(sandbox, users, client, caplog, purge_broker):
    sandbox.fault(
        status=403,
        count=None,
        methods=["POST"],
        paths=["/statuses/"],
        message="Resource not accessible by integration",
    )
    caplog.set_level(logging.WARNING, logger="changes.portalstatus")

    promotion = _requested(sandbox, users)

    assert promotion.state == "requested" and promotion.branch_pushed_at is not None
    assert promotion.portal_status_error.startswith("could not post the portal's status: ")
    assert "403" in promotion.portal_status_error and FORGE_TOKEN not in promotion.portal_status_error
    assert not _statuses(sandbox, promotion.pushed_head_sha)
    # The same verdict again: not posted again, not logged again.
    assert services.promotion_status_publish(promotion_id=promotion.pk) == "unchanged"
    services.promotion_track(promotion_id=promotion.pk)
    assert len([r for r in caplog.records if "could not post" in r.getMessage()]) == 1

    client.force_login(users["viewer"])
    html = client.get(promotion.get_absolute_url()).content.decode()
    assert "data-portal-status-error" in html and "could not post the portal&#x27;s status" in html

    # The promotion goes on: approved, its PR opened.
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.state == "pr_open" and promotion.portal_status_state == "success"
    assert promotion.portal_status_error  # still refused, and said so


def test_a_forge_5xx_is_retried_and_never_fails_the_promotion(sandbox, users, purge_broker):
    sandbox.fault(status=502, count=2, methods=["POST"], paths=["/statuses/"])
    promotion = _requested(sandbox, users)  # the push's publish meets the first 502: logged, not raised
    assert promotion.state == "requested" and not promotion.portal_status_state

    with pytest.raises(PullRequestRetryable):  # the task's call: retried with backoff
        services.promotion_status_publish(promotion_id=promotion.pk)
    assert Promotion.objects.get(pk=promotion.pk).state == "requested"

    assert services.promotion_status_publish(promotion_id=promotion.pk) == "posted"
    assert [s["state"] for s in _statuses(sandbox, promotion.pushed_head_sha)] == ["pending"]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_posts_each_verdict_once_however_often_it_is_enqueued(sandbox, users, worker_factory):
    """Every ledger event enqueues the status task (request, push, approval, PR opened...): the worker
    posts pending, then success, and nothing twice."""
    worker_factory()
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    wait_for(lambda: Promotion.objects.get(pk=promotion.pk).portal_status_state == "pending", timeout=60,
             message="pending posted by the worker")  # fmt: skip
    promotion.refresh_from_db()
    head = promotion.pushed_head_sha
    services.promotion_approve(promotion=promotion, actor=users["approver"], head_sha=head)
    wait_for(
        lambda: Promotion.objects.get(pk=promotion.pk).state == "pr_open", timeout=60, message="PR opened"
    )
    wait_for(lambda: Promotion.objects.get(pk=promotion.pk).portal_status_state == "success", timeout=30,
             message="success posted")  # fmt: skip
    events = AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk)).count()
    assert events >= 4  # each enqueued a publish
    time.sleep(2)  # let the last enqueued publishes run
    assert [s["state"] for s in _statuses(sandbox, head)] == ["success", "pending"]
