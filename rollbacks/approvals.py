"""After-the-fact approval of emergency rollbacks, and the escalation of those nobody approved.

An emergency rollback skips the approval a normal change gets; an approver of its project and
environment (never the on-call engineer who requested it) approves it afterwards with a reason.
The approval is a ledger event (`rollback.approved_after_the_fact`) and fills the change record's
approvers, so the insight exception report ("Emergency change without after-the-fact approval")
no longer lists it. One still unapproved EMERGENCY_APPROVAL_DEADLINE_HOURS after its request is
escalated once (`rollback.approval_escalated`), which notification subscriptions deliver.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.permissions import ensure_role, has_role
from accounts.roles import Role
from changes.branchcheck import change_branch_verify
from changes.lifecycle import change_record
from changes.pullrequests import PullRequestPermanent, PullRequestRetryable

from .kind import ROLLBACK, rollback_load
from .models import RollbackRequest
from .requests import RollbackRefused, request_text_clean

State = RollbackRequest.State
REASON_LIMIT = 2000


def approval_deadline() -> timedelta:
    """How long an emergency rollback may stay unapproved before it is escalated."""
    return timedelta(hours=settings.EMERGENCY_APPROVAL_DEADLINE_HOURS)


def rollback_can_approve_after(*, user: Any, rollback: RollbackRequest) -> bool:
    """Tell whether `user` may approve this rollback now (the page shows the form only then)."""
    return (
        rollback.awaits_approval_after
        and getattr(user, "is_authenticated", False)
        and user.pk != rollback.requested_by_id
        and has_role(
            user, Role.APPROVER, project=rollback.application.project, environment=rollback.environment.name
        )
    )


def rollback_approve_after_the_fact(
    *, actor: User, rollback: RollbackRequest, reason: str, request: HttpRequest | None = None
) -> RollbackRequest:
    """Record an approver's retrospective approval of an emergency rollback, with a reason."""
    ensure_role(
        actor,
        Role.APPROVER,
        project=rollback.application.project,
        environment=rollback.environment.name,
        request=request,
    )
    if actor.pk == rollback.requested_by_id:
        raise PermissionDenied("the requester of an emergency rollback cannot approve it")
    reason = request_text_clean(reason, limit=REASON_LIMIT, name="A reason", required=True)
    if not rollback.emergency:
        raise RollbackRefused("only emergency rollbacks are approved after the fact")
    if rollback.state == State.CANCELLED:
        raise RollbackRefused("a cancelled rollback needs no approval")
    _branch_verified(rollback)
    now = timezone.now()
    # Bound to the commit the approver saw: the merged PR head, else what the portal pushed.
    head = rollback.pr_head_sha or rollback.pushed_head_sha
    with transaction.atomic():
        # Conditional UPDATE: two approvers submitting at once record one approval.
        approved = RollbackRequest.objects.filter(
            pk=rollback.pk, emergency=True, approved_after_at__isnull=True
        ).update(
            approved_after_by=actor,
            approved_after_by_name=actor.get_username(),
            approved_after_at=now,
            approved_after_reason=reason,
            approved_after_head_sha=head,
        )
        if not approved:
            raise RollbackRefused("this rollback has been approved already")
        current = rollback_load(rollback.pk)
        change_record(
            kind=ROLLBACK,
            change=current,
            action="rollback.approved_after_the_fact",
            actor=actor,
            before={"approved_after_by": None},
            after={"approved_after_by": actor.get_username(), "reason": reason, "head_sha": head},
            message=f"emergency rollback approved after the fact: {reason}"[:2000],
        )
    return current


def _branch_verified(rollback: RollbackRequest) -> None:
    """Before the merge, ask the forge that the revert branch is still at the portal's head (as a
    promotion's approval does): someone else's commit fails the rollback as tampered now; a forge
    error refuses the approval with nothing recorded. After the merge the branch no longer matters."""
    try:
        check = change_branch_verify(kind=ROLLBACK, change_id=rollback.pk)
    except PullRequestRetryable as exc:
        raise RollbackRefused(
            f"the forge could not confirm the revert branch head ({exc}); nothing was recorded: try again"
        ) from None
    except PullRequestPermanent as exc:
        raise RollbackRefused(f"the revert branch cannot be checked on the forge ({exc})") from None
    if check.outcome == "tampered":
        raise RollbackRefused(f"not approved: {check.detail}; the rollback is blocked as tampered (failed)")


def rollbacks_escalate_unapproved(*, now: datetime | None = None) -> int:
    """Escalate, once each, emergency rollbacks unapproved past the deadline; return how many."""
    now = now or timezone.now()
    due = list(
        RollbackRequest.objects.filter(
            emergency=True,
            approved_after_at__isnull=True,
            approval_escalated_at__isnull=True,
            requested_at__lte=now - approval_deadline(),
        )
        .exclude(state=State.CANCELLED)
        .values_list("pk", flat=True)
    )
    escalated = 0
    for pk in due:
        with transaction.atomic():
            # Claim with a conditional UPDATE: a second run (or a concurrent beat) escalates nothing.
            claimed = RollbackRequest.objects.filter(
                pk=pk, approved_after_at__isnull=True, approval_escalated_at__isnull=True
            ).update(approval_escalated_at=now)
            if not claimed:
                continue
            rollback = rollback_load(pk)
            hours = settings.EMERGENCY_APPROVAL_DEADLINE_HOURS
            change_record(
                kind=ROLLBACK,
                change=rollback,
                action="rollback.approval_escalated",
                after={"deadline_hours": hours, "requested_by": rollback.requested_by_name},
                message=(
                    f"emergency rollback by {rollback.requested_by_name} still has no after-the-fact "
                    f"approval {hours} h after it was requested"
                ),
            )
            escalated += 1
    return escalated
