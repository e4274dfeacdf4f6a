"""Promotion tracking: PR merged → Argo CD synced → deployed → Healthy (or failed, degraded).

The shared steps (PR reads, tracking errors, the deploy timeout, the sweeper) live in
changes.tracking and changes.sweeper; this module knows what "deployed" means for a promotion:
every app of the release train runs a revision containing the merge, as Argo CD reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.roles import Role
from changes.checks import change_checks_refresh
from changes.lifecycle import change_transition
from changes.portalstatus import change_status_publish, change_status_refresh
from changes.pullrequests import pull_request_refresh
from changes.sweeper import change_sweep
from changes.syncs import change_sync, change_sync_hold, change_sync_override, change_sync_retry
from changes.tracking import (
    change_deploy_timeout,
    change_fail_after_merge,
    change_pr_head_moved,
    change_pr_read,
    change_tracked,
    change_tracking_error,
    deploy_timed_out,
    deploy_timeout,
    deploy_timeout_label,
)
from inventory.appstate import change_sync_result
from inventory.liveobjects import argo_rollouts, rollouts_aborted

from . import gitops, observed
from .kind import PROMOTION
from .models import IN_FLIGHT_STATES, Promotion, PromotionItem, PromotionState
from .records import revision_label
from .selectors import promotion_argo_apps

S = PromotionState


def promotion_track(*, promotion_id: int) -> str:
    """Advance a promotion from its PR and Argo CD state; safe to call any time, any number of times.

    Each tick also posts the portal's status on the head if its verdict changed (changes.portalstatus).
    """
    state = _track(promotion_id)
    change_status_refresh(kind=PROMOTION, change_id=promotion_id)
    return state


def promotion_status_publish(*, promotion_id: int, sha: str = "") -> str:
    """Post the portal's commit status on the promotion's head if its verdict changed (idempotent)."""
    return change_status_publish(kind=PROMOTION, change_id=promotion_id, sha=sha)


def _track(promotion_id: int) -> str:
    promotion = Promotion.objects.with_related().get(pk=promotion_id)
    change_tracked(kind=PROMOTION, change_id=promotion.pk)
    if promotion.state == S.PR_OPEN and promotion.pr_number:
        repository, number = promotion.repository, promotion.pr_number
        pr = change_pr_read(
            kind=PROMOTION, change=promotion, read=lambda: pull_request_refresh(repository, number)
        )
        if pr is None:
            return promotion.state
        if change_pr_head_moved(kind=PROMOTION, change=promotion, pr=pr):
            promotion.refresh_from_db()
            return promotion.state
        if pr.merged:
            _move(
                promotion,
                from_states=[S.PR_OPEN],
                to=S.MERGED,
                action="merged",
                merged_at=pr.merged_at or timezone.now(),
                merge_commit_sha=pr.merge_commit_sha or "",
                merged_by=(pr.merged_by or "")[:150],
                extra={"merged_by": pr.merged_by, "merge_commit_sha": pr.merge_commit_sha},
                message=f"PR #{pr.number} merged" + (f" by {pr.merged_by}" if pr.merged_by else ""),
            )
        elif pr.state == "closed":
            _move(
                promotion,
                from_states=[S.PR_OPEN],
                to=S.ABANDONED,
                action="abandoned",
                abandoned_at=timezone.now(),
                message=f"PR #{pr.number} was closed without merging",
            )
            return promotion.state
        else:
            required = promotion.target_env.required_checks
            change_checks_refresh(kind=PROMOTION, change=promotion, repository=repository, required=required)
            return promotion.state
    if promotion.state == S.MERGED and not promotion.merge_commit_sha:
        change_tracking_error(
            kind=PROMOTION,
            change=promotion,
            error="the forge did not report the merge commit of the pull request",
        )
        _deploy_timeout(promotion, detail="the merge commit is unknown")
    elif promotion.state == S.MERGED and change_sync_hold(kind=PROMOTION, change=promotion):
        return promotion.state  # the portal syncs it (sync: portal): waiting for the window or Argo CD
    elif promotion.state in (S.MERGED, S.DEPLOYED):
        _track_rollout(promotion)
    return promotion.state


def promotion_sync(*, promotion_id: int) -> str:
    """Sync a merged promotion into a `sync: portal` environment (changes.syncs.change_sync)."""
    return change_sync(kind=PROMOTION, change_id=promotion_id)


def promotion_sync_override(*, promotion: Promotion, actor: Any, reason: str) -> Promotion:
    """Override the closed sync window of a merged promotion (an approver, not the requester)."""
    result: Promotion = change_sync_override(
        kind=PROMOTION, change_id=promotion.pk, actor=actor, reason=reason
    )
    return result


# Who may ask for a failed sync again: the role that requests promotions, or an approver.
SYNC_RETRY_ROLES = (Role.RELEASE_MANAGER, Role.APPROVER)


def promotion_sync_retry(*, promotion: Promotion, actor: Any) -> Promotion:
    """Retry the failed (given up) sync of a merged promotion (release manager or approver)."""
    result: Promotion = change_sync_retry(
        kind=PROMOTION, change_id=promotion.pk, actor=actor, roles=SYNC_RETRY_ROLES
    )
    return result


def _move(promotion: Promotion, *, from_states: Sequence[str], to: str, action: str, **fields: Any) -> bool:
    """Transition through the lifecycle and refresh `promotion` (later checks read its new state)."""
    moved = change_transition(
        kind=PROMOTION, change_id=promotion.pk, from_states=from_states, to=to, action=action, **fields
    )
    promotion.refresh_from_db()
    return moved


def _deploy_timeout(promotion: Promotion, *, detail: str) -> bool:
    """Fail a merged promotion that is still not deployed after PROMOTION_DEPLOY_TIMEOUT_MINUTES."""
    target = promotion.target_env.name
    reason = f"{target} does not run the merged change {deploy_timeout_label()} after the merge: {detail}"
    timed_out = change_deploy_timeout(kind=PROMOTION, change=promotion, reason=reason)
    promotion.refresh_from_db()
    return timed_out


def _track_rollout(promotion: Promotion) -> None:
    mirror = gitops.mirror_for(promotion.repository)
    merge = promotion.merge_commit_sha
    items = list(promotion.items.select_related("application"))
    states = {item.pk: observed.env_state(item.application, promotion.target_env) for item in items}
    now = timezone.now()

    def contains(revision: str) -> bool:
        if not revision:
            return False
        try:
            return gitops.ensure_commit(mirror, revision) and mirror.is_ancestor(merge, revision)
        except Exception:
            return False

    def runs_merge(view: observed.AppView) -> bool:
        return contains(view.revision) and view.sync_status == "Synced"

    deployed_items = []
    failed_views: list[observed.AppView] = []
    syncing = False
    for item in items:
        state = states[item.pk]
        views = state.apps
        if any(
            v.operation_phase == "Running" or contains(v.revision) or v.sync_status == "OutOfSync"
            for v in views
        ):
            syncing = True
        if views and all(runs_merge(v) for v in views):
            deployed_items.append(item)
            if item.deployed_at is None:
                PromotionItem.objects.filter(pk=item.pk, deployed_at__isnull=True).update(
                    deployed_at=now,
                    deployed_revision=revision_label(v.revision for v in views),
                    sync_result=change_sync_result(views),
                )
        # The sync that should apply the merge failed (Argo CD does not retry it by itself).
        failed_views += [
            v
            for v in views
            if v.operation_failed and not runs_merge(v) and contains(v.operation_revision or v.revision)
        ]
    if syncing and promotion.syncing_at is None:
        Promotion.objects.filter(pk=promotion.pk, syncing_at__isnull=True).update(syncing_at=now)
        promotion.syncing_at = now
    if promotion.tracking_error:
        change_tracking_error(kind=PROMOTION, change=promotion, error="")
    if promotion.state == S.MERGED and failed_views:
        detail = "; ".join(
            f"{v.name}: sync {v.operation_phase.lower()}"
            + (f": {v.operation_message}" if v.operation_message else "")
            for v in failed_views
        )
        reason = f"Argo CD could not sync the merged change into {promotion.target_env.name}: {detail}"
        change_fail_after_merge(
            kind=PROMOTION,
            change=promotion,
            reason=reason,
            action="sync_failed",
            extra={
                "sync": [
                    {
                        "app": v.name,
                        "phase": v.operation_phase,
                        "revision": v.operation_revision or v.revision,
                    }
                    for v in failed_views
                ]
            },
        )
        return
    if promotion.state == S.MERGED and items and len(deployed_items) == len(items):
        revisions = sorted({v.revision for s in states.values() for v in s.apps})
        _move(
            promotion,
            from_states=[S.MERGED],
            to=S.DEPLOYED,
            action="deployed",
            deployed_at=now,
            syncing_at=Coalesce(F("syncing_at"), Value(now)),
            deployed_revision=revision_label(revisions),
            extra={"revisions": revisions},
            message=f"{promotion.target_env.name} runs a revision containing {merge[:12]}",
        )
    if promotion.state == S.MERGED:
        waiting = [states[i.pk].summary() for i in items if i not in deployed_items]
        _deploy_timeout(promotion, detail="; ".join(waiting)[:3000])
        return
    if promotion.state != S.DEPLOYED:
        return
    all_states = list(states.values())
    if all(s.healthy for s in all_states):
        PromotionItem.objects.filter(promotion=promotion, healthy_at__isnull=True).update(healthy_at=now)
        for item in items:
            # The sync has finished by now (it may still have been Running when first deployed).
            PromotionItem.objects.filter(pk=item.pk).update(
                sync_result=change_sync_result(states[item.pk].apps)
            )
        _move(
            promotion,
            from_states=[S.DEPLOYED],
            to=S.HEALTHY,
            action="healthy",
            healthy_at=now,
            message=f"{promotion.target_env.name} is Healthy",
        )
    elif any(s.degraded for s in all_states):
        detail = "; ".join(s.summary() for s in all_states if s.degraded)
        # An aborted Argo Rollouts canary says why in its own words: lead with them.
        degraded = {v.name for s in all_states if s.degraded for v in s.apps}
        rows = [row for row in promotion_argo_apps(promotion) if row.name in degraded]
        aborted = rollouts_aborted(argo_rollouts(rows))
        if aborted:
            detail = "; ".join(aborted) + f" ({detail})"
        _move(
            promotion,
            from_states=[S.DEPLOYED],
            to=S.DEGRADED,
            action="degraded",
            degraded_at=now,
            failure_reason=f"{promotion.target_env.name} is degraded after the promotion: {detail}"[:4000],
            message=detail[:2000],
        )
    elif deploy_timed_out(promotion.deployed_at, now=now):
        detail = "; ".join(s.summary() for s in all_states if not s.healthy)
        reason = f"{promotion.target_env.name} is not Healthy {deploy_timeout_label()} after the deployment: {detail}"
        change_fail_after_merge(
            kind=PROMOTION,
            change=promotion,
            reason=reason,
            action="degraded",
            to=S.DEGRADED,
            from_states=(S.DEPLOYED,),
            extra={"timeout_minutes": int(deploy_timeout().total_seconds() // 60)},
        )


def promotions_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue work whose message was lost; poll PRs and rollouts as the webhook fallback."""
    return {
        **change_sweep(kind=PROMOTION, now=now),
        "in_flight": Promotion.objects.filter(state__in=IN_FLIGHT_STATES).count(),
    }
