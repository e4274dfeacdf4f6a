"""Celery tasks: thin wrappers taking ids and calling the service of the same name.

All are `acks_late` (a killed worker's message is redelivered) and idempotent: the database row is
the truth, the PR-opening claim is a conditional UPDATE with a lease (changes.lifecycle), and the
beat sweeper re-enqueues work whose message was lost. Task names are stable (messages in flight).
"""

from __future__ import annotations

from celery import Task, shared_task

from changes.backoff import retry_countdown, task_run_with_retries

from .models import PromotionState as S
from .pullrequests import (
    promotion_branch_push,
    promotion_branch_verify,
    promotion_close_pr,
    promotion_fail,
    promotion_pr_open,
)
from .tracking import promotion_status_publish, promotion_sync, promotion_track, promotions_sweep

FOLLOW_INTERVAL_SECONDS = 5
# The one backoff of change-request tasks (kept importable here for the settings checks).
backoff = retry_countdown


@shared_task(bind=True, acks_late=True, max_retries=8, name="promotions.tasks.promotion_branch_push_task")
def promotion_branch_push_task(self: Task, promotion_id: int) -> str:
    """Push a requested promotion's branch before approval; after the last retry the promotion fails."""
    result = task_run_with_retries(
        self,
        lambda: promotion_branch_push(promotion_id=promotion_id),
        give_up=lambda reason: promotion_fail(promotion_id=promotion_id, reason=reason),
    )
    return result or "failed"


@shared_task(bind=True, acks_late=True, max_retries=8, name="promotions.tasks.promotion_pr_open_task")
def promotion_pr_open_task(self: Task, promotion_id: int) -> str:
    """Open (or find) a promotion's PR; after the last retry the promotion fails with the reason."""
    result = task_run_with_retries(
        self,
        lambda: promotion_pr_open(promotion_id=promotion_id),
        give_up=lambda reason: promotion_fail(promotion_id=promotion_id, reason=reason),
    )
    return result or "failed"


@shared_task(bind=True, acks_late=True, max_retries=8, name="promotions.tasks.promotion_branch_verify_task")
def promotion_branch_verify_task(self: Task, promotion_id: int) -> str:
    """Check the promotion branch with the forge (a push webhook named it); tampered: it fails."""
    return task_run_with_retries(self, lambda: promotion_branch_verify(promotion_id=promotion_id))


@shared_task(bind=True, acks_late=True, max_retries=5, name="promotions.tasks.promotion_track_task")
def promotion_track_task(self: Task, promotion_id: int, follow: int = 0) -> str:
    """Advance tracking; with `follow` > 0 keep polling every few seconds while the rollout runs."""
    state = task_run_with_retries(self, lambda: promotion_track(promotion_id=promotion_id))
    if follow > 0 and state in (S.PR_OPEN, S.MERGED, S.DEPLOYED):
        promotion_track_task.apply_async((promotion_id, follow - 1), countdown=FOLLOW_INTERVAL_SECONDS)
    return state


@shared_task(bind=True, acks_late=True, max_retries=8, name="promotions.tasks.promotion_sync_task")
def promotion_sync_task(self: Task, promotion_id: int) -> str:
    """Ask Argo CD to sync a merged promotion (`sync: portal`), in its sync windows; idempotent."""
    return task_run_with_retries(self, lambda: promotion_sync(promotion_id=promotion_id))


@shared_task(bind=True, acks_late=True, max_retries=6, name="promotions.tasks.promotion_close_pr_task")
def promotion_close_pr_task(self: Task, promotion_id: int) -> str:
    """Close the PR and delete the branch of a cancelled or failed promotion."""
    return task_run_with_retries(self, lambda: promotion_close_pr(promotion_id=promotion_id))


@shared_task(bind=True, acks_late=True, max_retries=6, name="promotions.tasks.promotion_status_publish_task")
def promotion_status_publish_task(self: Task, promotion_id: int, sha: str = "") -> str:
    """Post the portal's commit status on the promotion's head if its verdict changed."""
    return task_run_with_retries(self, lambda: promotion_status_publish(promotion_id=promotion_id, sha=sha))


@shared_task(acks_late=True, name="promotions.tasks.promotions_sweep_task")
def promotions_sweep_task() -> dict[str, int]:
    """Re-enqueue lost PR openings and track active promotions (run by beat)."""
    return promotions_sweep()
