"""Promotion requests and approvals: request (gates checked), approve/reject (four eyes), cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.permissions import ensure_role, has_role
from accounts.roles import Role
from audit.services import audit_event_record
from changes.branchcheck import change_branch_verify
from changes.checklist import OVERRIDE_MIN_REASON, SECRET_SCAN, apply_override, gate_key, overridable_failing
from changes.gatehistory import AFTER_OVERRIDE, AT_REQUEST, gate_snapshot, snapshots_append
from changes.lifecycle import (
    change_enqueue_pr_open,
    change_enqueue_push,
    change_record,
    change_requester_fields,
)
from changes.pullrequests import PullRequestPermanent, PullRequestRetryable
from inventory.models import Application, Environment

from .gates import RENDERED_PENDING_DETAIL
from .kind import PROMOTION, promotion_close_pr_enqueue
from .models import (
    CANCELLABLE_STATES,
    Approval,
    ApprovalDecision,
    Promotion,
    PromotionItem,
    PromotionState,
)
from .preview import PromotionPreview, PromotionRefused, PromotionRetryLater, promotion_preview
from .pullrequests import promotion_gates_on_rendering

S = PromotionState


def promotion_request_create(
    *,
    actor: User,
    applications: Sequence[Application],
    source_env: Environment,
    target_env: Environment,
    note: str = "",
    override_justification: str = "",
) -> Promotion:
    """Request a promotion (release_manager of each app's project) after checking every gate."""
    for app in applications:
        ensure_role(actor, Role.RELEASE_MANAGER, project=app.project, environment=target_env.name)
    override = bool(override_justification.strip())
    preview = promotion_preview(
        actor=actor,
        applications=applications,
        source_env=source_env,
        target_env=target_env,
        override=override,
        justification=override_justification,
    )
    failing = preview.refusing
    if failing:
        link = next((gate.link for gate in failing if gate.name == "in_flight" and gate.link), "")
        raise PromotionRefused(
            "; ".join(f"{gate.label}: {gate.detail}" for gate in failing), gates=failing, link=link
        )
    return _create(
        actor=actor, preview=preview, note=note, justification=override_justification if override else ""
    )


@transaction.atomic
def _create(*, actor: User, preview: PromotionPreview, note: str, justification: str) -> Promotion:
    assert preview.repository is not None
    overridden = any(gate.name == "sync_window" and "OVERRIDDEN" in gate.detail for gate in preview.all_gates)
    gates = [gate.as_dict() for gate in preview.all_gates]
    requested_at = timezone.now()
    promotion = Promotion.objects.create(
        source_env=preview.source_env,
        target_env=preview.target_env,
        repository=preview.repository,
        note=note,
        override_sync_window=overridden,
        override_justification=justification.strip() if overridden else "",
        **change_requester_fields(actor),
        gates=gates,
        requested_gates=gates,
        gate_evaluations=[gate_snapshot(AT_REQUEST, requested_at, gates)],
        requested_at=requested_at,
    )
    try:
        with transaction.atomic():
            for item in preview.items:
                assert item.plan is not None
                PromotionItem.objects.create(
                    promotion=promotion,
                    application=item.application,
                    target_env=preview.target_env,
                    source_revision=item.source_revision,
                    source_versions=item.source_versions,
                    target_versions_before=item.plan.versions_before,
                    target_versions_after=item.plan.versions_after,
                    version_before=item.plan.version_before[:200],
                    version_after=item.plan.version_after[:200],
                    paths=item.paths,
                    commits=[
                        {
                            "sha": c.sha,
                            "short_sha": c.short_sha,
                            "subject": c.subject,
                            "author": c.author,
                            "authored_at": c.authored_at.isoformat(),
                            "url": c.url,
                        }
                        for c in item.commits
                    ],
                    diff=item.plan.diff,
                    target_revision_before=item.target_revision_before[:64],
                )
    except IntegrityError:
        other = (
            PromotionItem.objects.filter(
                application__in=[i.application for i in preview.items],
                target_env=preview.target_env,
                active=True,
            )
            .exclude(promotion=promotion)
            .values_list("promotion_id", flat=True)
            .first()
        )
        raise PromotionRefused(
            f"another promotion (#{other}) of this app into {preview.target_env.name} is in flight",
            link=reverse("promotions:detail", args=[other]) if other else "",
        ) from None
    change_record(
        kind=PROMOTION,
        change=promotion,
        action="promotion.requested",
        actor=actor,
        after={
            "source_env": preview.source_env.name,
            "base_sha": preview.base_sha,
            "override_sync_window": overridden,
            "justification": promotion.override_justification,
            "gates": [{"name": x.name, "status": x.status, "detail": x.detail} for x in preview.all_gates],
        },
        message=note,
    )
    if not preview.target_env.requires_approval and not overridable_failing(promotion.gates):
        now = timezone.now()
        Promotion.objects.filter(pk=promotion.pk).update(state=S.APPROVED, approved_at=now)
        promotion.state, promotion.approved_at = S.APPROVED, now
        change_record(
            kind=PROMOTION,
            change=promotion,
            action="promotion.approved",
            before={"state": S.REQUESTED},
            message=f"{preview.target_env.name} does not require approval",
        )
        change_enqueue_pr_open(kind=PROMOTION, change_id=promotion.pk)
    else:
        # Pushed now, before any approval: the approver reviews the commit that will be merged.
        change_enqueue_push(kind=PROMOTION, change_id=promotion.pk)
    return promotion


def _projects(promotion: Promotion) -> list[str]:
    return sorted({i.application.project for i in promotion.items.select_related("application")})


def _record_refusal(actor: User, promotion: Promotion, message: str) -> None:
    audit_event_record(
        action="auth.denied",
        actor=actor,
        target_type="promotion",
        target_id=promotion.pk,
        target_label=f"promotion #{promotion.pk}",
        environment=promotion.target_env.name,
        message=message,
        correlation_id=promotion.correlation_id or None,
    )


def _check_approver(actor: User, promotion: Promotion, verb: str) -> None:
    for project in _projects(promotion):
        ensure_role(actor, Role.APPROVER, project=project, environment=promotion.target_env.name)
    if promotion.requested_by_id is not None and actor.pk == promotion.requested_by_id:
        message = f"four-eyes: the requester cannot {verb} their own promotion"
        _record_refusal(actor, promotion, message)
        raise PermissionDenied(message)


def promotion_approve(
    *, promotion: Promotion, actor: User, comment: str = "", head_sha: str = ""
) -> Promotion:
    """Approve (approver role, never the requester); N approvals move it to `approved`.

    The approval binds to the pushed branch head; `head_sha` (what the approver reviewed, from the
    page or the API) must be that head, else the branch moved under them and nothing is recorded.
    """
    _check_approver(actor, promotion, "approve")
    verified = _branch_verified(promotion)
    _rendering_available(promotion)
    return _decide(
        promotion=promotion,
        actor=actor,
        decision=ApprovalDecision.APPROVE,
        comment=comment,
        reviewed_sha=head_sha.strip().lower(),
        verified_head=verified,
    )


def _branch_verified(promotion: Promotion) -> str:
    """Ask the forge, before recording an approval, that the branch is still at the portal's head.

    Outside the row lock (a network call). A foreign head fails the promotion as tampered now, not
    when the PR would open; a forge error refuses the approval (nothing recorded: retry). Returns
    the verified head ("" when there is nothing pushed to verify: `_decide` refuses that itself).
    """
    try:
        check = change_branch_verify(kind=PROMOTION, change_id=promotion.pk)
    except PullRequestRetryable as exc:
        raise PromotionRetryLater(
            "the forge could not confirm that the promotion branch is still at the commit you "
            f"reviewed ({exc}); nothing was recorded: try again in a moment"
        ) from None
    except PullRequestPermanent as exc:
        raise PromotionRefused(
            f"the promotion branch cannot be checked on the forge ({exc}); nothing was recorded"
        ) from None
    if check.outcome == "tampered":
        raise PromotionRefused(
            f"not approved: {check.detail}. The promotion is blocked as tampered (failed) and its "
            "branch is taken down; request it again"
        )
    if check.outcome == "missing":
        raise PromotionRetryLater(
            f"not approved: {check.detail}; the portal pushes it again, approve once it is back"
        )
    return check.head


def _rendering_available(promotion: Promotion) -> None:
    """Make sure Argo CD rendered the pushed head before an approval: the approver approves its diff.

    Argo CD being down (a timeout, unreachable) when the branch was pushed left a transient failure
    in the stored gates and no rendered diff to review: ask Argo CD again now (outside the row lock,
    a network call). Still failing, the approval is refused with Argo CD's message and nothing is
    recorded; the approver tries again once it answers. A permanent failure is refused by `_decide`.
    """
    if not promotion.branch_pushed:
        return  # `_decide` refuses: nothing pushed to approve yet
    if not any(_stale_rendering(gate) for gate in promotion.gates or []):
        return
    gates = promotion_gates_on_rendering(promotion_id=promotion.pk)
    promotion.gates = gates
    transient = [gate for gate in gates if gate.get("name") == "rendered" and _stale_rendering(gate)]
    if transient:
        raise PromotionRetryLater(
            "not approved: there is no rendered diff to review. "
            + "; ".join(str(gate.get("detail")) for gate in transient)
            + ". Nothing was recorded: approve once Argo CD answers"
        )


def _stale_rendering(gate: dict[str, Any]) -> bool:
    """A rendered gate that does not hold Argo CD's rendering of the pushed head: failed for a while
    (Argo CD down, a timeout) or still waiting for the branch."""
    if not isinstance(gate, dict) or gate.get("name") != "rendered":
        return False
    failed_for_now = not gate.get("passed") and bool(gate.get("transient"))
    return failed_for_now or gate.get("detail") == RENDERED_PENDING_DETAIL


def promotion_reject(*, promotion: Promotion, actor: User, comment: str = "") -> Promotion:
    """Reject with a reason (approver role, never the requester): the promotion ends `rejected`.

    The requester reads why in the ledger and on the page, so an empty reason is refused.
    """
    _check_approver(actor, promotion, "reject")
    reason = (comment or "").strip()
    if not reason:
        raise PromotionRefused("a rejection needs a reason: tell the requester what to change")
    return _decide(promotion=promotion, actor=actor, decision=ApprovalDecision.REJECT, comment=reason)


@transaction.atomic
def _decide(
    *,
    promotion: Promotion,
    actor: User,
    decision: str,
    comment: str,
    reviewed_sha: str = "",
    verified_head: str = "",
) -> Promotion:
    locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
    if locked.state != S.REQUESTED:
        raise PromotionRefused(
            f"promotion #{locked.pk} is {locked.get_state_display().lower()}, not awaiting approval"
        )
    if Approval.objects.valid().filter(promotion=locked, approver=actor).exists():
        raise PromotionRefused("you already decided on this promotion")
    head = locked.pushed_head_sha if locked.branch_pushed else ""
    if decision == ApprovalDecision.APPROVE and not head:
        raise PromotionRefused(
            "the promotion branch is not pushed yet: approve once it is, so that you approve "
            "exactly the commit that will be merged"
        )
    if decision == ApprovalDecision.APPROVE and verified_head != head:
        # The portal moved its branch between the forge check and this lock: check the new head.
        raise PromotionRetryLater("the promotion branch changed while it was being checked: try again")
    if reviewed_sha and reviewed_sha != head:
        raise PromotionRefused(
            f"the branch is now at {head[:12] or 'nothing'}, not at {reviewed_sha[:12]} that you reviewed: "
            "review the new head and approve again"
        )
    if decision == ApprovalDecision.APPROVE and (refusing := _refusing_on_rendering(locked.gates)):
        raise PromotionRefused(
            "the pushed head cannot be approved: "
            + "; ".join(f"{gate.get('label')}: {gate.get('detail')}" for gate in refusing)
        )
    if decision == ApprovalDecision.APPROVE and (pending := overridable_failing(locked.gates)):
        raise PromotionRefused(
            "blocked by the zero-downtime checklist ("
            + ", ".join(str(gate.get("label")) for gate in pending)
            + "): an approver other than the requester must override it with a reason first"
        )
    Approval.objects.create(
        promotion=locked,
        approver=actor,
        approver_name=actor.get_username(),
        decision=decision,
        comment=comment,
        head_sha=head,
    )
    now = timezone.now()
    if decision == ApprovalDecision.REJECT:
        Promotion.objects.filter(pk=locked.pk).update(state=S.REJECTED, rejected_at=now, claimed_until=None)
        PromotionItem.objects.filter(promotion=locked).update(active=False)
        locked.state, locked.rejected_at = S.REJECTED, now
        change_record(
            kind=PROMOTION,
            change=locked,
            action="promotion.rejected",
            actor=actor,
            before={"state": S.REQUESTED},
            after={"state": S.REJECTED, "reason": comment, "head_sha": head},
            message=comment,
        )
        if locked.pr_branch:
            promotion_close_pr_enqueue(locked)  # the branch pushed for review goes away
        return locked
    target = locked.target_env
    required = max(1, target.approvals_required) if target.requires_approval else 1
    count = locked.approvals.approving(head).count()
    if count < required:
        change_record(
            kind=PROMOTION,
            change=locked,
            action="promotion.approval_recorded",
            actor=actor,
            after={"approvals": count, "required": required, "head_sha": head},
            message=comment or f"approval {count} of {required} at {head[:12]}",
        )
        return locked
    # The push task has finished (the branch is confirmed): the claim is the PR opening's now.
    Promotion.objects.filter(pk=locked.pk).update(state=S.APPROVED, approved_at=now, claimed_until=None)
    locked.state, locked.approved_at = S.APPROVED, now
    change_record(
        kind=PROMOTION,
        change=locked,
        action="promotion.approved",
        actor=actor,
        before={"state": S.REQUESTED},
        after={"approvals": count, "required": required, "head_sha": head},
        message=comment,
    )
    change_enqueue_pr_open(kind=PROMOTION, change_id=locked.pk)
    return locked


def promotion_cancel(*, promotion: Promotion, actor: User, reason: str = "") -> Promotion:
    """Cancel before merge (the requester or a release manager of the apps): closes PR, deletes branch."""
    if promotion.requested_by_id != getattr(actor, "pk", None):
        for project in _projects(promotion):
            ensure_role(actor, Role.RELEASE_MANAGER, project=project, environment=promotion.target_env.name)
    elif not any(has_role(actor, Role.RELEASE_MANAGER, project=p) for p in _projects(promotion)):
        ensure_role(actor, Role.RELEASE_MANAGER, project=_projects(promotion)[0])
    return _cancel(promotion=promotion, actor=actor, reason=reason)


@transaction.atomic
def _cancel(*, promotion: Promotion, actor: User, reason: str) -> Promotion:
    locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
    if locked.state not in CANCELLABLE_STATES:
        raise PromotionRefused(
            f"promotion #{locked.pk} is {locked.get_state_display().lower()} and can no longer be cancelled"
        )
    before = locked.state
    now = timezone.now()
    Promotion.objects.filter(pk=locked.pk).update(state=S.CANCELLED, cancelled_at=now, claimed_until=None)
    PromotionItem.objects.filter(promotion=locked).update(active=False)
    locked.state, locked.cancelled_at = S.CANCELLED, now
    change_record(
        kind=PROMOTION,
        change=locked,
        action="promotion.cancelled",
        actor=actor,
        before={"state": before},
        message=reason,
    )
    if before in (S.PR_OPENING, S.PR_OPEN) or locked.pr_number or locked.pr_branch:
        promotion_close_pr_enqueue(locked)
    return locked


def promotion_checklist_override(*, promotion: Promotion, actor: User, reason: str) -> Promotion:
    """Override the promotion's failing blocking checklist gates (approver, never the requester).

    The reason is required; the override, who gave it and why are written to the promotion, its
    gates (each marked `overridden`) and the ledger (`promotion.checklist_overridden`) in one
    transaction. The secret scan and every other gate stay as they are: they cannot be overridden.
    Approving is a separate decision.
    """
    _check_approver(actor, promotion, "override the checklist of")
    text = " ".join((reason or "").split())
    if len(text) < OVERRIDE_MIN_REASON:
        raise PromotionRefused(
            f"an override needs a reason of at least {OVERRIDE_MIN_REASON} characters: say why it is safe"
        )
    return _override(promotion=promotion, actor=actor, reason=text[:2000])


@transaction.atomic
def _override(*, promotion: Promotion, actor: User, reason: str) -> Promotion:
    locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
    if locked.state != S.REQUESTED:
        raise PromotionRefused(
            f"promotion #{locked.pk} is {locked.get_state_display().lower()}, not awaiting approval"
        )
    pending = overridable_failing(locked.gates)
    if not pending:
        raise PromotionRefused("no blocking zero-downtime checklist gate to override")
    now = timezone.now()
    gates = apply_override(locked.gates, keys=[gate_key(gate) for gate in pending], reason=reason)
    evaluations = snapshots_append(locked.gate_evaluations, gate_snapshot(AFTER_OVERRIDE, now, gates))
    Promotion.objects.filter(pk=locked.pk).update(
        gates=gates,
        gate_evaluations=evaluations,
        checklist_overridden_by=actor,
        checklist_overridden_by_name=actor.get_username(),
        checklist_overridden_at=now,
        checklist_override_reason=reason,
    )
    locked.gates, locked.gate_evaluations = gates, evaluations
    locked.checklist_overridden_by, locked.checklist_overridden_by_name = actor, actor.get_username()
    locked.checklist_overridden_at, locked.checklist_override_reason = now, reason
    change_record(
        kind=PROMOTION,
        change=locked,
        action="promotion.checklist_overridden",
        actor=actor,
        before={"blocking": [str(gate.get("name")) for gate in pending]},
        after={
            "reason": reason,
            "gates": [
                {
                    "name": gate.get("name"),
                    "label": gate.get("label"),
                    "findings": len(gate.get("findings") or []),
                }
                for gate in pending
            ],
        },
        message=f"zero-downtime checklist overridden: {reason}"[:2000],
    )
    return locked


def _refusing_on_rendering(gates: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Failing gates of the pushed head nobody may override: the secret scan, and Argo CD failing to
    render it (a transient failure too: `_rendering_available` asked again just before)."""
    return [
        gate
        for gate in gates or []
        if gate.get("name") in ("rendered", SECRET_SCAN)
        and gate.get("blocking")
        and not gate.get("passed")
        and not gate.get("overridable")
    ]
