"""Celery tasks of rollbacks: thin, idempotent wrappers around the services of the same name.

Task names are stable (messages may be in flight); retries use the lifecycle's one backoff.
"""

from __future__ import annotations

from celery import Task, shared_task

from changes.backoff import task_run_with_retries

from .approvals import rollbacks_escalate_unapproved
from .pullrequests import rollback_branch_verify, rollback_fail, rollback_pr_open
from .tracking import rollback_status_publish, rollback_sync, rollback_track, rollbacks_sweep

MAX_RETRIES = 8


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_pr_open_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_pr_open_task(self: Task, rollback_id: int) -> None:
    """Open the revert PR of a rollback (safe to run twice: the row is claimed, the PR ensured)."""
    task_run_with_retries(
        self,
        lambda: rollback_pr_open(rollback_id=rollback_id),
        give_up=lambda reason: rollback_fail(rollback_id=rollback_id, reason=reason),
    )


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_branch_verify_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_branch_verify_task(self: Task, rollback_id: int) -> None:
    """Check the revert branch with the forge (a push webhook named it); tampered: it fails."""
    task_run_with_retries(self, lambda: rollback_branch_verify(rollback_id=rollback_id))


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_track_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_track_task(self: Task, rollback_id: int) -> None:
    """Move a rollback forward (merged → deployed → healthy); the sweeper calls it again later."""
    task_run_with_retries(self, lambda: rollback_track(rollback_id=rollback_id))


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_sync_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_sync_task(self: Task, rollback_id: int) -> None:
    """Ask Argo CD to sync a merged rollback (`sync: portal`), in its sync windows; idempotent."""
    task_run_with_retries(self, lambda: rollback_sync(rollback_id=rollback_id))


@shared_task(
    bind=True,
    name="rollbacks.tasks.rollback_status_publish_task",
    acks_late=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def rollback_status_publish_task(self: Task, rollback_id: int, sha: str = "") -> None:
    """Post the portal's commit status on the revert's head if its verdict changed."""
    task_run_with_retries(self, lambda: rollback_status_publish(rollback_id=rollback_id, sha=sha))


@shared_task(name="rollbacks.tasks.rollbacks_sweep_task", acks_late=True, ignore_result=True)
def rollbacks_sweep_task() -> dict[str, int]:
    """Re-enqueue lost PR openings and track active rollbacks (run by beat)."""
    return rollbacks_sweep()


@shared_task(name="rollbacks.tasks.rollbacks_escalate_unapproved_task", acks_late=True, ignore_result=True)
def rollbacks_escalate_unapproved_task() -> int:
    """Escalate emergency rollbacks without after-the-fact approval past the deadline (run by beat)."""
    return rollbacks_escalate_unapproved()
