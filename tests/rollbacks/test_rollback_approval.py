"""After-the-fact approval of emergency rollbacks: the form, the ledger, the change record, the
exception report, and the escalation of those nobody approved in time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from audit.models import AuditEvent, ChangeRecord
from insight.models import Delivery, Subscription
from insight.selectors import exceptions_list
from insight.services import subscription_create
from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest
from tests.factories import UserFactory
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db


def _emergency(sandbox) -> RollbackRequest:
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    return services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        sha="",
        reason="checkout errors after the release",
        incident="INC-9",
        observed_deployment_id=None,
        confirm_moved=False,
        emergency=True,
        emergency_justification="checkout down, SEV1",
    )


def _approver(sandbox, username: str = "ana", project: str | None = None):
    user = UserFactory(username=username)
    RoleGrant.objects.create(user=user, role="approver", project=project or sandbox.team, environment="*")
    RoleGrant.objects.create(user=user, role="viewer", project=project or sandbox.team, environment="*")
    return user


def _unapproved_keys() -> set[str]:
    return {row.key for row in exceptions_list(user=None).rows.get("emergency_unapproved", [])}


def test_an_approver_approves_an_emergency_rollback_after_the_fact_and_the_exception_clears(
    sandbox_auto_merge, client
):
    sandbox = sandbox_auto_merge
    rollback = _emergency(sandbox)
    record = ChangeRecord.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert f"change:{record.pk}" in _unapproved_keys()

    # The on-call engineer who asked cannot approve it, even holding the approver role.
    RoleGrant.objects.create(
        user=rollback.requested_by, role="approver", project=sandbox.team, environment="*"
    )
    assert not services.rollback_can_approve_after(user=rollback.requested_by, rollback=rollback)
    with pytest.raises(PermissionDenied):
        services.rollback_approve_after_the_fact(
            actor=rollback.requested_by, rollback=rollback, reason="mine"
        )
    client.force_login(rollback.requested_by)
    assert (
        "Approve after the fact"
        not in client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    )

    # A viewer without the approver role sees no form and is refused.
    viewer = UserFactory(username="vic")
    RoleGrant.objects.create(user=viewer, role="viewer", project=sandbox.team, environment="*")
    client.force_login(viewer)
    assert (
        "Approve after the fact"
        not in client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    )
    refused = client.post(reverse("rollbacks:approve_after", args=[rollback.pk]), {"reason": "ok"})
    assert refused.status_code == 403

    approver = _approver(sandbox)
    client.force_login(approver)
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Approve after the fact" in page and "csrfmiddlewaretoken" in page
    # The reason is required.
    client.post(reverse("rollbacks:approve_after", args=[rollback.pk]), {"reason": "  "})
    rollback.refresh_from_db()
    assert rollback.approved_after_at is None

    response = client.post(
        reverse("rollbacks:approve_after", args=[rollback.pk]), {"reason": "right call: checkout was down"}
    )
    assert response.status_code == 302
    rollback.refresh_from_db()
    assert rollback.approved_after_by == approver and rollback.approved_after_by_name == "ana"
    assert rollback.approved_after_reason == "right call: checkout was down"
    event = AuditEvent.objects.get(action="rollback.approved_after_the_fact", target_id=str(rollback.pk))
    assert event.actor_name == "ana" and event.after["reason"] == "right call: checkout was down"
    record.refresh_from_db()
    assert record.approvers == ["ana"] and record.approved_at == rollback.approved_after_at
    assert record.approval_reason == "right call: checkout was down"
    assert record.separation_of_duties_ok is True
    assert f"change:{record.pk}" not in _unapproved_keys()
    shown = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert "Approved by <strong>ana</strong>" in shown and "Approve after the fact" not in shown
    client.force_login(UserFactory(username="audrey", roles=["auditor"]))
    detail = client.get(reverse("audit:change_detail", args=[record.pk])).content.decode()
    assert "right call: checkout was down" in detail

    # A second approval is refused; the ledger holds one.
    with pytest.raises(services.RollbackRefused, match="approved already"):
        services.rollback_approve_after_the_fact(
            actor=_approver(sandbox, "bo"), rollback=rollback, reason="me too"
        )
    assert AuditEvent.objects.filter(action="rollback.approved_after_the_fact").count() == 1


def test_an_unapproved_emergency_rollback_is_escalated_once_through_the_subscriptions(
    sandbox_auto_merge, settings, django_capture_on_commit_callbacks
):
    sandbox = sandbox_auto_merge
    settings.EMERGENCY_APPROVAL_DEADLINE_HOURS = 24
    subscription = subscription_create(
        actor=None,
        name="approvals",
        project_glob="*",
        event_kinds=["rollback.approval_escalated"],
        target_kind=Subscription.Target.GENERIC,
        url="http://127.0.0.1:9/hooks",
        secret="s3cret-s3cret",
    )
    rollback = _emergency(sandbox)
    approved = _emergency_approved_elsewhere(sandbox, rollback)
    now = timezone.now()

    assert services.rollbacks_escalate_unapproved(now=now + timedelta(hours=23)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.rollbacks_escalate_unapproved(now=now + timedelta(hours=25)) == 1
    # Escalate once: a later run finds nothing new.
    assert services.rollbacks_escalate_unapproved(now=now + timedelta(hours=48)) == 0

    rollback.refresh_from_db()
    assert rollback.approval_escalated_at is not None
    event = AuditEvent.objects.get(action="rollback.approval_escalated")
    assert event.target_id == str(rollback.pk) and event.after["deadline_hours"] == 24
    assert not AuditEvent.objects.filter(
        action="rollback.approval_escalated", target_id=str(approved.pk)
    ).exists()
    delivery = Delivery.objects.get(subscription=subscription)
    assert delivery.action == "rollback.approval_escalated" and delivery.event_sequence == event.sequence


def _emergency_approved_elsewhere(sandbox, first: RollbackRequest) -> RollbackRequest:
    """A second emergency rollback (another app), approved in time: it is never escalated."""
    other = Application.objects.exclude(name=sandbox.app).order_by("name").first()
    rollback = RollbackRequest.objects.create(
        application=other,
        environment=first.environment,
        requested_by=first.requested_by,
        requested_by_name=first.requested_by_name,
        reason="x",
        emergency=True,
        emergency_justification="y",
        state=RollbackRequest.State.HEALTHY,
        requested_at=first.requested_at,
    )
    return services.rollback_approve_after_the_fact(
        actor=_approver(sandbox, "cy", other.project), rollback=rollback, reason="fine"
    )


def test_the_after_the_fact_approval_binds_to_the_revert_commit_the_portal_pushed(sandbox_auto_merge, client):
    sandbox = sandbox_auto_merge
    rollback = _emergency(sandbox)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    head = rollback.pushed_head_sha
    assert head and rollback.branch_pushed_at is not None
    approver = _approver(sandbox)
    client.force_login(approver)
    page = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert f'You approve the revert commit <code class="sha">{head}</code>' in page

    services.rollback_approve_after_the_fact(actor=approver, rollback=rollback, reason="right call")

    rollback.refresh_from_db()
    assert rollback.approved_after_head_sha == head
    event = AuditEvent.objects.get(action="rollback.approved_after_the_fact", target_id=str(rollback.pk))
    assert event.after["head_sha"] == head
    record = ChangeRecord.objects.get(source_type="rollback", source_id=str(rollback.pk))
    assert record.approved_head_sha == head
    shown = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert f'on commit <code class="sha">{head}</code>' in shown


def test_a_foreign_push_to_the_revert_branch_before_the_merge_is_caught_by_the_approval(
    sandbox_auto_merge,
):
    sandbox = sandbox_auto_merge  # emergency rollbacks need it; nothing tracks (merges) it here
    rollback = _emergency(sandbox)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == RollbackRequest.State.PR_OPEN and rollback.branch_pushed_at is not None
    reviewed = rollback.pushed_head_sha
    ws = sandbox.workspace(rollback.branch)
    ws.write_file("NOTES.md", "harmless, honest\n")
    foreign = ws.commit("tidy up", author_name="Mallory", author_email="mallory@example.com")
    ws.push(rollback.branch)

    with pytest.raises(services.RollbackRefused, match="blocked as tampered"):
        services.rollback_approve_after_the_fact(
            actor=_approver(sandbox), rollback=rollback, reason="right call"
        )

    rollback.refresh_from_db()
    assert rollback.state == RollbackRequest.State.FAILED and rollback.approved_after_at is None
    moved = AuditEvent.objects.get(action="rollback.branch_moved", target_id=str(rollback.pk))
    assert (moved.after["from_sha"], moved.after["to_sha"], moved.after["tampered"]) == (
        reviewed,
        foreign,
        True,
    )
    assert not AuditEvent.objects.filter(action="rollback.approved_after_the_fact").exists()
