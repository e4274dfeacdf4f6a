"""Process-level tasks."""

from __future__ import annotations

from celery import current_task, shared_task
from django.utils import timezone

from core.requestid import current_request_id

from .models import WorkerHeartbeat


@shared_task(name="gitopsportal.tasks.worker_heartbeat", acks_late=True, ignore_result=False)
def worker_heartbeat() -> str:
    """Record that a worker is alive and consuming (beat runs it every minute)."""
    hostname = (current_task.request.hostname if current_task else None) or "unknown"
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"seen_at": timezone.now(), "request_id": current_request_id() or ""}
    )
    return hostname
