"""Promotions as a kind of change request (changes.lifecycle): states, tasks and hooks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from changes.lifecycle import ChangeKind, change_enqueue, change_kind_register
from changes.portalstatus import PortalStatus, gates_status, portal_page_url
from changes.pullrequests import PullRequestResult
from inventory.models import Application, Environment

from .models import (
    CANCELLABLE_STATES,
    FINAL_STATES,
    IN_FLIGHT_STATES,
    Approval,
    Promotion,
    PromotionItem,
    PromotionState,
)
from .records import apps_label, promotion_change_records_sync, target_label

S = PromotionState
CLOSE_PR_TASK = "promotions.tasks.promotion_close_pr_task"
PUSH_TASK = "promotions.tasks.promotion_branch_push_task"
# After a PR that was found merged already, keep tracking every few seconds this many times.
FOLLOW_AFTER_MERGE = 12


def _load(promotion_id: int) -> Promotion:
    return Promotion.objects.with_related().get(pk=promotion_id)


def _event_after(promotion: Promotion, after: dict[str, Any]) -> dict[str, Any]:
    items = promotion.items.select_related("application")
    versions = [
        {"app": i.application.name, "before": i.version_before, "after": i.version_after} for i in items
    ]
    return {"state": promotion.state, "items": versions, **after}


def _records_sync(promotion: Promotion) -> None:
    promotion_change_records_sync(promotion, list(promotion.items.select_related("application")))


def _release_slots(promotion: Promotion) -> None:
    # A final promotion frees the app x target env in-flight slot of its items.
    PromotionItem.objects.filter(promotion=promotion).update(active=False)


def promotion_close_pr_enqueue(promotion: Promotion) -> None:
    """Enqueue closing the PR (and deleting the branch) of a cancelled or failed promotion."""
    change_enqueue(task=CLOSE_PR_TASK, args=(promotion.pk,))


def _claim_fields(now: datetime) -> dict[str, Any]:
    return {"pr_opening_at": Coalesce(F("pr_opening_at"), Value(now)), "next_attempt_at": None}


def _retry_fields(error: str) -> dict[str, Any]:
    # The task retries within CELERY_RETRY_BACKOFF_MAX; the sweeper only steps in after that.
    retry_by = timezone.now() + timedelta(seconds=settings.CELERY_RETRY_BACKOFF_MAX + 30)
    return {"last_error": error[:2000], "next_attempt_at": retry_by}


def _on_head_moved(promotion: Promotion, old: str) -> tuple[int, dict[str, Any]]:
    """Invalidate every approval still counting (all given on `old`); await approval again."""
    invalidated = Approval.objects.valid().filter(promotion=promotion).update(invalidated_at=timezone.now())
    if promotion.state not in (S.REQUESTED, S.APPROVED, S.PR_OPENING):
        return invalidated, {}
    if not promotion.target_env.requires_approval:
        # Nothing to approve again: the PR opening pushes the new head and goes on.
        return invalidated, {"state": S.APPROVED, "pr_opening_at": None}
    return invalidated, {"state": S.REQUESTED, "approved_at": None, "pr_opening_at": None}


def _shas(promotion: Promotion) -> list[str]:
    shas = (promotion.merge_commit_sha, promotion.pr_head_sha, promotion.pushed_head_sha)
    return list(dict.fromkeys(s for s in shas if s))


def _in_flight(application: Application, environment: Environment) -> list[Promotion]:
    return list(
        Promotion.objects.filter(
            items__application=application,
            items__active=True,
            target_env=environment,
            state__in=IN_FLIGHT_STATES,
        ).distinct()
    )


def _track_args(result: PullRequestResult) -> tuple[int]:
    return (0 if result.state == "open" else FOLLOW_AFTER_MERGE,)


# After the merge the status guards nothing: nothing is posted any more.
_PAST_MERGE = (S.MERGED, S.DEPLOYED, S.HEALTHY, S.DEGRADED)
_REFUSED = {
    S.REJECTED: "Rejected in the GitOps Portal",
    S.CANCELLED: "Cancelled in the GitOps Portal",
    S.ABANDONED: "Abandoned: the pull request was closed",
}


def promotion_status_verdict(promotion: Promotion) -> PortalStatus | None:
    """The portal's status on the promotion's head: approvals (bound to that head) and gates."""
    head = promotion.pushed_head_sha or promotion.pr_head_sha
    if not head or promotion.state in _PAST_MERGE:
        return None
    if promotion.state == S.FAILED:
        return PortalStatus("failure", f"Failed in the GitOps Portal: {promotion.failure_reason}", head)
    if promotion.state in _REFUSED:
        return PortalStatus("failure", _REFUSED[S(promotion.state)], head)
    awaiting = promotion.state == S.REQUESTED
    return gates_status(list(promotion.gates or []), sha=head, approved=not awaiting)


PROMOTION = change_kind_register(
    ChangeKind(
        name="promotion",
        system_name="promotions",
        model=Promotion,
        claim_states=(S.APPROVED, S.PR_OPENING),
        claiming_state=S.PR_OPENING,
        failable_states=tuple(CANCELLABLE_STATES),
        final_states=tuple(FINAL_STATES),
        opening_since="approved_at",
        pr_open_task="promotions.tasks.promotion_pr_open_task",
        track_task="promotions.tasks.promotion_track_task",
        load=_load,
        snapshot=lambda promotion: {"state": promotion.state},
        event_after=_event_after,
        records_sync=_records_sync,
        audit_fields=lambda promotion: {
            "target_label": target_label(promotion),
            "app": apps_label(promotion),
            "environment": promotion.target_env.name,
            "shas": _shas(promotion),
        },
        claim_fields=_claim_fields,
        pr_open_fields={"last_error": ""},
        retry_fields=_retry_fields,
        retry_not_before="next_attempt_at",
        branch_field="pr_branch",
        pr_poll_seconds=300,
        open_grace_seconds=30,
        on_final=_release_slots,
        close_pr=promotion_close_pr_enqueue,
        track_args=_track_args,
        in_flight=_in_flight,
        push_task=PUSH_TASK,
        push_states=(S.REQUESTED,),
        on_head_moved=_on_head_moved,
        repository=lambda promotion: promotion.repository,
        verify_task="promotions.tasks.promotion_branch_verify_task",
        sync_task="promotions.tasks.promotion_sync_task",
        sync_scope=lambda promotion: (
            promotion.target_env,
            [item.application for item in promotion.items.select_related("application")],
        ),
        status_verdict=promotion_status_verdict,
        page_url=lambda promotion: portal_page_url(promotion.get_absolute_url()),
        status_task="promotions.tasks.promotion_status_publish_task",
    )
)
