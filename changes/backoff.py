"""The one retry backoff of change-request tasks (promotions and rollbacks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from django.conf import settings

from .pullrequests import PullRequestRetryable

T = TypeVar("T")


def retry_countdown(retries: int, retry_after: float | None) -> int:
    """Exponential backoff (1, 2, 4, ... s), at least Retry-After, at most CELERY_RETRY_BACKOFF_MAX."""
    wait = max(float(2**retries), float(retry_after or 0))
    return int(min(wait, settings.CELERY_RETRY_BACKOFF_MAX))


def task_run_with_retries(
    task: Task, call: Callable[[], T], *, give_up: Callable[[str], Any] | None = None
) -> T:
    """Run a task's service call; retry transient failures with backoff, a bounded number of times.

    After `task.max_retries` retries, `give_up(reason)` marks the row failed (when given) and the
    task ends; without `give_up` the last retry's error propagates (the sweeper tries again later).
    """
    try:
        return call()
    except PullRequestRetryable as exc:
        retries = task.request.retries
        if give_up is not None and retries >= (task.max_retries or 0):
            give_up(f"gave up after {retries + 1} attempts: {exc}")
            return None  # type: ignore[return-value]
        raise task.retry(exc=exc, countdown=retry_countdown(retries, exc.retry_after)) from None
