"""Celery tasks: thin, ids only, safe to run twice (each service claims its row first)."""

from __future__ import annotations

from celery import shared_task

from .configapply import config_apply_from_settings
from .ingest import repository_ingest
from .models import ArgoInstance, GitRepository
from .poll import instance_poll

MAX_RETRIES = 2


@shared_task(name="inventory.tasks.poll_instance_task", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def poll_instance_task(self, instance_id: int) -> dict:
    """Poll one Argo CD instance; retry a transient failure (timeouts, 5xx) with backoff."""
    if not ArgoInstance.objects.filter(pk=instance_id).exists():
        return {"skipped": True, "reason": "instance no longer exists"}
    result = instance_poll(instance_id=instance_id)
    if result.transient and self.request.retries < MAX_RETRIES:
        raise self.retry(countdown=5 * 2**self.request.retries)
    return {
        "instance": result.instance,
        "skipped": result.skipped,
        "apps_seen": result.apps_seen,
        "changed": result.apps_changed,
        "new_deployments": result.new_deployments,
        "error": result.error,
    }


@shared_task(name="inventory.tasks.poll_all_task", acks_late=True)
def poll_all_task() -> int:
    """Apply the configuration, then enqueue one poll per Argo CD instance (beat: POLL_INTERVAL_SECONDS)."""
    config_apply_from_settings()
    ids = list(ArgoInstance.objects.values_list("pk", flat=True))
    for pk in ids:
        poll_instance_task.delay(pk)
    return len(ids)


@shared_task(
    name="inventory.tasks.repository_ingest_task", bind=True, acks_late=True, max_retries=MAX_RETRIES
)
def repository_ingest_task(self, repository_id: int) -> dict:
    """Fetch a repository's mirror and ingest new commits (beat, and the forge push webhook)."""
    if not GitRepository.objects.filter(pk=repository_id).exists():
        return {"skipped": True, "reason": "repository no longer exists"}
    result = repository_ingest(repository_id=repository_id)
    if result.error and self.request.retries < MAX_RETRIES:
        raise self.retry(countdown=10 * 2**self.request.retries)
    return {
        "repository": result.repository,
        "skipped": result.skipped,
        "commits": result.commits,
        "error": result.error,
    }


@shared_task(name="inventory.tasks.ingest_all_task", acks_late=True)
def ingest_all_task() -> int:
    """Enqueue one ingest per repository (beat: every GIT_FETCH_INTERVAL_SECONDS)."""
    ids = list(GitRepository.objects.values_list("pk", flat=True))
    for pk in ids:
        repository_ingest_task.delay(pk)
    return len(ids)
