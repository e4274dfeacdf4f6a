"""Promotion services against the sandbox: permissions, four-eyes, gates, blocks, cancel, audit."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from audit.models import AuditEvent
from changes.pullrequests import PullRequestPermanent
from changes.sweeper import change_sweep
from inventory.models import Application
from promotions import services
from promotions import tasks as promotion_tasks
from promotions.kind import PROMOTION
from promotions.models import Approval, Promotion, PromotionBlock, PromotionState
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState


def _request(sandbox, user, app=None, **kwargs) -> Promotion:
    app = app or promotable_app(sandbox)
    return services.promotion_request_create(
        actor=user, applications=[app], source_env=sandbox.stage, target_env=sandbox.prod, **kwargs
    )


def _actions(promotion: Promotion) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def test_requester_cannot_approve_their_own_promotion_even_as_approver(sandbox, users, purge_broker):
    promotion = _request(sandbox, users["rm_approver"])
    with pytest.raises(PermissionDenied, match="four-eyes"):
        services.promotion_branch_push(promotion_id=promotion.pk)
        services.promotion_approve(promotion=promotion, actor=users["rm_approver"])
    with pytest.raises(PermissionDenied):
        services.promotion_reject(promotion=promotion, actor=users["rm_approver"])
    promotion.refresh_from_db()
    assert promotion.state == S.REQUESTED
    assert not Approval.objects.exists()
    assert AuditEvent.objects.filter(action="auth.denied", target_id=str(promotion.pk)).count() == 2


def test_viewer_cannot_request_and_release_manager_cannot_approve(sandbox, users):
    with pytest.raises(PermissionDenied):
        _request(sandbox, users["viewer"])
    promotion = _request(sandbox, users["rm"])
    other_rm = UserFactory(username="ron", roles=["release_manager"])
    with pytest.raises(PermissionDenied):
        services.promotion_branch_push(promotion_id=promotion.pk)
        services.promotion_approve(promotion=promotion, actor=other_rm)


def test_n_approvals_are_needed_when_configured(sandbox, users, purge_broker):
    sandbox.prod.approvals_required = 2
    sandbox.prod.save()
    promotion = _request(sandbox, users["rm"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="one")
    promotion.refresh_from_db()
    assert promotion.state == S.REQUESTED
    with pytest.raises(services.PromotionRefused, match="already decided"):
        services.promotion_branch_push(promotion_id=promotion.pk)
        services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver2"], comment="two")
    promotion.refresh_from_db()
    assert promotion.state == S.APPROVED and promotion.approved_at is not None
    assert _actions(promotion) == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approval_recorded",
        "promotion.approved",
    ]


def test_reject_ends_the_promotion_and_frees_the_app(sandbox, users):
    app = promotable_app(sandbox)
    promotion = _request(sandbox, users["rm"], app=app)
    services.promotion_reject(promotion=promotion, actor=users["approver"], comment="not today")
    promotion.refresh_from_db()
    assert promotion.state == S.REJECTED and promotion.rejected_at is not None
    assert _actions(promotion) == ["promotion.requested", "promotion.rejected"]
    again = _request(sandbox, users["rm"], app=app)  # no longer in flight
    assert again.state == S.REQUESTED


def test_second_promotion_of_the_same_app_into_the_same_env_is_refused_with_a_link(sandbox, users):
    app = promotable_app(sandbox)
    first = _request(sandbox, users["rm"], app=app)
    with pytest.raises(services.PromotionRefused) as info:
        _request(sandbox, users["rm_approver"], app=app)
    assert info.value.link == f"/promotions/{first.pk}/"
    assert any(g.name == "in_flight" for g in info.value.gates)
    assert Promotion.objects.count() == 1


def test_denied_sync_window_blocks_unless_overridden_with_justification(sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    sandbox.argo_fault(deny_sync_window=[{"project": app.project, "clusters": ["prod-*"]}])
    with pytest.raises(services.PromotionRefused) as info:
        _request(sandbox, users["rm"], app=app)
    gate = next(g for g in info.value.gates if g.name == "sync_window")
    assert "denied" in gate.detail
    # A plain release manager may not override.
    with pytest.raises(services.PromotionRefused, match="may not override"):
        _request(sandbox, users["rm"], app=app, override_justification="hotfix for the payment outage")
    # release_manager + approver may, with a written justification.
    with pytest.raises(services.PromotionRefused, match="justification"):
        _request(sandbox, users["rm_approver"], app=app, override_justification="now")
    promotion = _request(
        sandbox, users["rm_approver"], app=app, override_justification="hotfix for the payment outage"
    )
    assert promotion.override_sync_window
    event = AuditEvent.objects.get(action="promotion.requested", target_id=str(promotion.pk))
    assert event.after["override_sync_window"] is True
    assert event.after["justification"] == "hotfix for the payment outage"


def test_skipping_an_environment_is_refused_unless_configured(sandbox, users):
    app = promotable_app(sandbox)
    with pytest.raises(services.PromotionRefused, match="skips stage"):
        services.promotion_request_create(
            actor=users["rm"], applications=[app], source_env=sandbox.dev, target_env=sandbox.prod
        )
    with pytest.raises(services.PromotionRefused, match="does not come after"):
        services.promotion_request_create(
            actor=users["rm"], applications=[app], source_env=sandbox.prod, target_env=sandbox.stage
        )
    sandbox.prod.allow_skip_from = ["dev"]
    sandbox.prod.save()
    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.dev, target_env=sandbox.prod
    )
    assert next(g for g in preview.all_gates if g.name == "environment_order").passed


def test_a_blocked_version_is_refused_until_the_block_is_cleared(sandbox, users):
    app = promotable_app(sandbox)
    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    version = preview.items[0].plan.versions_after[0]
    block = services.promotion_block_create(
        application=app,
        environment=sandbox.prod,
        blocked_version=version.split("@")[-1].split(":")[-1]
        if "@" not in version
        else version.split("@")[1],
        reason="rolled back: 500s",
        actor=users["rm"],
        source_type="rollback",
        source_id="7",
    )
    assert (
        services.promotion_block_create(
            application=app,
            environment=sandbox.prod,
            blocked_version=block.blocked_version,
            actor=users["rm"],
        )
        == block
    )  # idempotent
    with pytest.raises(services.PromotionRefused, match="blocked"):
        _request(sandbox, users["rm"], app=app)
    with pytest.raises(PermissionDenied):
        services.promotion_block_clear(block=block, actor=users["approver"])
    services.promotion_block_clear(block=block, actor=users["rm"])
    assert not PromotionBlock.objects.active().exists()
    assert _request(sandbox, users["rm"], app=app).state == S.REQUESTED
    assert list(
        AuditEvent.objects.filter(target_type="promotion_block")
        .order_by("sequence")
        .values_list("action", flat=True)
    ) == ["promotion.block_created", "promotion.block_cleared"]


def test_cancel_closes_the_pr_and_deletes_the_branch(sandbox, users, purge_broker):
    promotion = _request(sandbox, users["rm"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pr_branch in sandbox.branches()
    services.promotion_cancel(promotion=promotion, actor=users["rm"], reason="wrong version")
    assert services.promotion_close_pr(promotion_id=promotion.pk) == "closed"
    pull = sandbox.pulls()[0]
    assert pull["state"] == "closed" and not pull["merged"]
    assert promotion.pr_branch not in sandbox.branches()
    promotion.refresh_from_db()
    assert promotion.state == S.CANCELLED and promotion.cancelled_at is not None
    assert _actions(promotion) == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approved",
        "promotion.pr_opened",
        "promotion.cancelled",
    ]
    with pytest.raises(services.PromotionRefused):
        services.promotion_cancel(promotion=promotion, actor=users["rm"])


def test_pr_closed_without_merge_ends_abandoned(sandbox, users, purge_broker):
    promotion = _request(sandbox, users["rm"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    from changes.pullrequests import forge_for

    forge_for(sandbox.repository).close_pull_request(promotion.pr_number)
    assert services.promotion_track(promotion_id=promotion.pk) == S.ABANDONED
    promotion.refresh_from_db()
    assert promotion.abandoned_at is not None
    assert _actions(promotion)[-1] == "promotion.abandoned"


def test_degraded_target_ends_degraded(sandbox, users, purge_broker):
    promotion = _request(sandbox, users["rm"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    item = promotion.items.get()
    bad = item.version_after
    sandbox.argo_fault(degraded_tags=[bad])
    sandbox.merge(promotion.pr_number)

    def settled() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) in (S.DEGRADED, S.HEALTHY)

    wait_for(settled, timeout=30, interval=0.5, message="promotion settled")
    promotion.refresh_from_db()
    assert promotion.state == S.DEGRADED, promotion.failure_reason
    assert "degraded" in promotion.failure_reason


def test_bulk_release_train_opens_one_pr_for_several_apps(sandbox, users, purge_broker):
    from promotions import observed

    apps = [
        a
        for a in Application.objects.order_by("name")
        if observed.env_state(a, sandbox.stage).images != observed.env_state(a, sandbox.prod).images
    ]
    if len(apps) < 2:
        pytest.skip("fewer than two apps differ between stage and prod")
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=apps[:2], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert re.fullmatch(
        rf"promote/release-train/stage-to-prod/{promotion.pk}-[0-9a-f]{{8}}", promotion.pr_branch
    )
    diff = sandbox.pr_diff(promotion.pr_number)
    assert diff.count("diff --git") == 2


def test_branch_names_and_paths_from_input_never_become_git_options(sandbox, users, tmp_path):
    from changes.pullrequests import PullRequestSpec, pull_request_ensure
    from integrations.gitrepo import InvalidRef, validate_ref_name
    from promotions.strategies import StrategyError, _option_path

    called = []
    for branch in ("--upload-pack=touch /tmp/pwned", "-b", "a..b", "x y", "promote/../../x"):
        with pytest.raises(PullRequestPermanent):
            pull_request_ensure(
                spec=PullRequestSpec(
                    repository=sandbox.repository, branch=branch, base="main", title="t", body="b"
                ),
                prepare_branch=lambda ws: called.append(ws),
            )
    with pytest.raises(PullRequestPermanent):
        pull_request_ensure(
            spec=PullRequestSpec(
                repository=sandbox.repository, branch="ok/branch", base="--exec=x", title="t", body="b"
            ),
            prepare_branch=lambda ws: called.append(ws),
        )
    assert called == []
    with pytest.raises(InvalidRef):
        validate_ref_name("--output=/tmp/x")
    for rel in ("../../../etc/passwd", "/etc/passwd", "", "a/../../b", "../other-app/kustomization.yaml"):
        with pytest.raises(StrategyError):
            _option_path("environments/prod/app", rel)
    # An app whose name would make an option-like branch fails the promotion readably, never runs git.
    app = promotable_app(sandbox)
    promotion = _request(sandbox, users["rm"], app=app)
    Application.objects.filter(pk=app.pk).update(name="..evil")
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "failed"
    promotion.refresh_from_db()
    assert "branch name" in promotion.failure_reason
    assert sandbox.pulls() == [] and not [b for b in sandbox.branches() if b.startswith("promote/")]


def test_a_long_retry_after_schedules_the_promotion_retry_instead_of_sleeping(sandbox, users, purge_broker):
    promotion = _request(sandbox, users["rm"])
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    sandbox.fault(
        paths=["/pulls"], methods=["POST"], secondary_rate_limit={"retry_after": 900, "status": 403}
    )
    started = time.monotonic()

    promotion_tasks.promotion_pr_open_task.apply(args=(promotion.pk,))

    assert time.monotonic() - started < 60  # neither slept nor retried inside the task
    promotion.refresh_from_db()
    assert promotion.state == S.PR_OPENING and promotion.claimed_until is None
    wait = (promotion.next_attempt_at - timezone.now()).total_seconds()
    assert 850 < wait <= 900
    assert change_sweep(kind=PROMOTION, now=timezone.now() + timedelta(seconds=600))["reopened"] == 0
    assert change_sweep(kind=PROMOTION, now=promotion.next_attempt_at + timedelta(seconds=1))["reopened"] == 1
