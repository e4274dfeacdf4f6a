"""Tracking shared by every kind: PR reads, tracking errors, the deploy timeout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.durations import format_duration
from integrations.forges import PullRequest

from .lifecycle import FAILED, MERGED, ChangeKind, change_head_moved, change_record, change_transition
from .pullrequests import BranchMoved, PullRequestPermanent

T = TypeVar("T")


def change_tracked(*, kind: ChangeKind, change_id: int) -> None:
    """Stamp `last_tracked_at` (the sweeper polls what was not tracked lately)."""
    kind.rows().filter(pk=change_id).update(last_tracked_at=timezone.now())


def change_tracking_error(*, kind: ChangeKind, change: Any, error: str) -> None:
    """Show (or clear) a permanent tracking problem on the page; the first report is an audit event."""
    error = error[:2000]
    if change.tracking_error == error:
        return
    with transaction.atomic():
        updated = kind.rows().filter(pk=change.pk).exclude(tracking_error=error).update(tracking_error=error)
        change.tracking_error = error
        if updated and error:
            change_record(
                kind=kind,
                change=change,
                action=f"{kind.name}.tracking_error",
                after={"state": change.state, "error": error},
                message=error,
            )


def change_pr_read(*, kind: ChangeKind, change: Any, read: Callable[[], T]) -> T | None:
    """Read the PR of a change; a permanent error shows on the page (None), success clears it."""
    try:
        value = read()
    except PullRequestPermanent as exc:
        # Retrying cannot help (PR deleted, token lost access): say so on the page, keep the state.
        change_tracking_error(
            kind=kind, change=change, error=f"cannot read pull request #{change.pr_number}: {exc}"
        )
        return None
    change_tracking_error(kind=kind, change=change, error="")
    return value


def change_pr_head_moved(*, kind: ChangeKind, change: Any, pr: PullRequest) -> bool:
    """An open PR whose head is not the commit the portal pushed: approvals invalidated, blocked.

    The portal never pushes to a branch once its PR is open, so any other head is someone else's
    commit (`change_head_moved`, tampered). Returns True when the change was stopped.
    """
    pushed = change.pushed_head_sha
    if pr.state != "open" or not pushed or pr.head_sha == pushed:
        return False
    moved = BranchMoved(
        f"the head of PR #{pr.number} moved from {pushed[:12]} to {pr.head_sha[:12]}, "
        "a commit the portal did not make",
        old=pushed,
        new=pr.head_sha,
        foreign=True,
    )
    change_head_moved(kind=kind, change_id=change.pk, moved=moved)
    return True


def deploy_timeout() -> timedelta:
    """How long a merged change may take to be deployed, and then Healthy."""
    return timedelta(minutes=settings.PROMOTION_DEPLOY_TIMEOUT_MINUTES)


def deploy_timeout_label() -> str:
    """The deploy timeout as people read it ("30 min")."""
    return format_duration(deploy_timeout())


def deploy_timed_out(since: datetime | None, *, now: datetime | None = None) -> bool:
    """True once `since` (merge or deployment time) is the deploy timeout ago."""
    return since is not None and (now or timezone.now()) - since >= deploy_timeout()


def change_deploy_timeout(*, kind: ChangeKind, change: Any, reason: str) -> bool:
    """Fail a merged change not deployed within the deploy timeout (`<kind>.deploy_timed_out`)."""
    # A portal-driven sync counts from its request (a closed sync window is no failure).
    since = getattr(change, "sync_requested_at", None) or change.merged_at
    if change.state != MERGED or not deploy_timed_out(since):
        return False
    return change_fail_after_merge(
        kind=kind,
        change=change,
        reason=reason,
        action="deploy_timed_out",
        extra={"timeout_minutes": int(deploy_timeout().total_seconds() // 60)},
    )


def change_fail_after_merge(
    *,
    kind: ChangeKind,
    change: Any,
    reason: str,
    action: str,
    to: str = FAILED,
    from_states: tuple[str, ...] = (MERGED,),
    extra: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """End a merged change Argo CD did not (or could not) deploy, or that is not Healthy, with a reason."""
    stamp = "failed_at" if to == FAILED else f"{to}_at"
    return change_transition(
        kind=kind,
        change_id=change.pk,
        from_states=from_states,
        to=to,
        action=action,
        message=reason[:2000],
        extra=extra,
        failure_reason=reason[:4000],
        **{stamp: timezone.now(), **fields},
    )
