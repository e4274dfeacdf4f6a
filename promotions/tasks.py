"""Celery tasks: thin wrappers taking ids and calling the service of the same name.

All are `acks_late` (a killed worker's message is redelivered) and idempotent: the database row is
the truth, the PR-opening claim is a conditional UPDATE with a lease, and the beat sweeper
re-enqueues work whose message was lost.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from .pullrequests import PullRequestRetryable

logger = logging.getLogger(__name__)

FOLLOW_INTERVAL_SECONDS = 5


def backoff(retries: int, retry_after: float | None) -> int:
    """Exponential backoff (1, 2, 4, ... s), at least Retry-After, at most CELERY_RETRY_BACKOFF_MAX."""
    base = 2**retries
    wait = max(float(base), float(retry_after or 0))
    return int(min(wait, settings.CELERY_RETRY_BACKOFF_MAX))


@shared_task(bind=True, acks_late=True, max_retries=8, name="promotions.tasks.promotion_pr_open_task")
def promotion_pr_open_task(self, promotion_id: int) -> str:
    from .services import promotion_fail, promotion_pr_open

    try:
        return promotion_pr_open(promotion_id=promotion_id)
    except PullRequestRetryable as exc:
        if self.request.retries >= self.max_retries:
            promotion_fail(
                promotion_id=promotion_id, reason=f"gave up after {self.request.retries + 1} attempts: {exc}"
            )
            return "failed"
        countdown = backoff(self.request.retries, exc.retry_after)
        logger.warning("promotion %s: transient failure, retrying in %ss: %s", promotion_id, countdown, exc)
        raise self.retry(countdown=countdown, exc=exc) from None


@shared_task(bind=True, acks_late=True, max_retries=5, name="promotions.tasks.promotion_track_task")
def promotion_track_task(self, promotion_id: int, follow: int = 0) -> str:
    """Advance tracking; with `follow` > 0 keep polling every few seconds while the rollout runs."""
    from .models import PromotionState as S
    from .services import promotion_track

    try:
        state = promotion_track(promotion_id=promotion_id)
    except PullRequestRetryable as exc:
        raise self.retry(countdown=backoff(self.request.retries, exc.retry_after), exc=exc) from None
    if follow > 0 and state in (S.PR_OPEN, S.MERGED, S.DEPLOYED):
        promotion_track_task.apply_async((promotion_id, follow - 1), countdown=FOLLOW_INTERVAL_SECONDS)
    return state


@shared_task(bind=True, acks_late=True, max_retries=6, name="promotions.tasks.promotion_close_pr_task")
def promotion_close_pr_task(self, promotion_id: int) -> str:
    from .services import promotion_close_pr

    try:
        return promotion_close_pr(promotion_id=promotion_id)
    except PullRequestRetryable as exc:
        raise self.retry(countdown=backoff(self.request.retries, exc.retry_after), exc=exc) from None


@shared_task(acks_late=True, name="promotions.tasks.promotions_sweep_task")
def promotions_sweep_task() -> dict:
    from .services import promotions_sweep

    return promotions_sweep()
