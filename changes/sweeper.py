"""The sweeper of every kind: re-enqueue lost PR openings, poll PRs and rollouts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .lifecycle import (
    DEPLOYED,
    MERGED,
    PR_OPEN,
    TRACKED_STATES,
    ChangeKind,
    change_enqueue_pr_open,
    change_enqueue_push,
    change_enqueue_track,
)
from .syncs import change_syncs_due

# Merged/deployed changes are tracked at every sweep (SWEEP_INTERVAL_SECONDS) unless tracked this
# recently (by a follow-up task or a webhook): Argo CD sends no webhook when a sync finishes.
ROLLOUT_POLL_SECONDS = 5
# Forges send no pull_request webhook when a check finishes: an open PR whose checks are still
# pending is polled this often for CHECKS_FOLLOW after it opened (then at pr_poll_seconds, and
# whenever its page is open: changes.checks.change_checks_live).
CHECKS_POLL_SECONDS = 15
CHECKS_FOLLOW = timedelta(hours=1)


def change_sweep(*, kind: ChangeKind, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue PR openings whose message or worker was lost; track open PRs and rollouts."""
    now = now or timezone.now()
    reopen = _lost(kind, kind.claim_states, kind.opening_since, now)
    for pk in reopen:
        change_enqueue_pr_open(kind=kind, change_id=pk, after_commit=False)
    # Request-time branch pushes whose message or worker was lost (the branch is not confirmed).
    repush = _lost(kind, kind.push_states, "requested_at", now, branch_pushed_at__isnull=True)
    for pk in repush:
        change_enqueue_push(kind=kind, change_id=pk, after_commit=False)
    # Webhooks drive PR state; polling open PRs is the slow fallback (forge rate limits). One
    # indexed query; a message not run before the next sweeps expires, so a backed-up queue does
    # not pile up duplicates.
    track = list(
        kind.rows()
        .filter(
            Q(state__in=TRACKED_STATES, last_tracked_at__isnull=True)
            | Q(state=PR_OPEN, last_tracked_at__lt=now - timedelta(seconds=kind.pr_poll_seconds))
            | Q(
                state=PR_OPEN,
                checks_verdict__in=("", "waiting"),
                pr_opened_at__gte=now - CHECKS_FOLLOW,
                last_tracked_at__lt=now - timedelta(seconds=CHECKS_POLL_SECONDS),
            )
            | Q(
                state__in=(MERGED, DEPLOYED),
                last_tracked_at__lt=now - timedelta(seconds=ROLLOUT_POLL_SECONDS),
            )
        )
        .values_list("pk", flat=True)[:500]
    )
    for pk in track:
        change_enqueue_track(
            kind=kind, change_id=pk, expires=settings.SWEEP_EXPIRES_SECONDS, after_commit=False
        )
    synced = change_syncs_due(kind=kind, now=now)
    return {"reopened": len(reopen), "repushed": len(repush), "tracked": len(track), "synced": synced}


def _lost(kind: ChangeKind, states: tuple[str, ...], since: str, now: datetime, **extra: Any) -> list[int]:
    """Rows in `states` nobody works on: unclaimed past the grace (from `since`), or claim lapsed."""
    if not states:
        return []
    lost = (
        kind.rows()
        .filter(state__in=states, **extra)
        .filter(
            Q(
                claimed_until__isnull=True,
                **{f"{since}__lt": now - timedelta(seconds=kind.open_grace_seconds)},
            )
            | Q(claimed_until__lt=now)
        )
    )
    if kind.retry_not_before:
        lost = lost.filter(
            Q(**{f"{kind.retry_not_before}__isnull": True}) | Q(**{f"{kind.retry_not_before}__lt": now})
        )
    return list(lost.values_list("pk", flat=True)[:200])
