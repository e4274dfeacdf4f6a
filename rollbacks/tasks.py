"""Celery tasks of rollbacks: thin, idempotent wrappers around the services of the same name."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from promotions.pullrequests import PullRequestPermanent, PullRequestRetryable

from . import services

logger = logging.getLogger(__name__)
MAX_RETRIES = 8


def _countdown(retries: int, exc: PullRequestRetryable) -> float:
    backoff = min(float(settings.CELERY_RETRY_BACKOFF_MAX), 2.0 * (2**retries))
    return max(backoff, float(exc.retry_after or 0)) if exc.retry_after is not None else backoff


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_pr_open_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_pr_open_task(self, rollback_id: int) -> None:
    """Open the revert PR of a rollback (safe to run twice: the row is claimed, the PR ensured)."""
    try:
        services.rollback_pr_open(rollback_id=rollback_id)
    except PullRequestRetryable as exc:
        if self.request.retries >= MAX_RETRIES:
            from .models import RollbackRequest

            rollback = RollbackRequest.objects.get(pk=rollback_id)
            services._fail(rollback, f"gave up after {MAX_RETRIES} retries: {exc}")
            return
        logger.info("rollback %s: transient failure, retrying: %s", rollback_id, exc)
        raise self.retry(exc=exc, countdown=_countdown(self.request.retries, exc)) from None


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_track_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_track_task(self, rollback_id: int) -> None:
    """Move a rollback forward (merged → deployed → healthy); the sweeper calls it again later."""
    try:
        services.rollback_track(rollback_id=rollback_id)
    except PullRequestRetryable as exc:
        raise self.retry(exc=exc, countdown=_countdown(self.request.retries, exc)) from None
    except PullRequestPermanent as exc:
        logger.warning("rollback %s: tracking failed permanently: %s", rollback_id, exc)


@shared_task(name="rollbacks.tasks.rollbacks_sweep_task", acks_late=True, ignore_result=True)
def rollbacks_sweep_task() -> dict[str, int]:
    """Re-enqueue lost PR openings and track active rollbacks (run by beat)."""
    return services.rollbacks_sweep()
