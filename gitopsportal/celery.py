"""The Celery app: configured from Django settings, request ids carried into tasks."""

from __future__ import annotations

import os

from celery import Celery, signals

from core.requestid import current_request_id, new_request_id, set_request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gitopsportal.settings")

app = Celery("gitopsportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Separate queues so a history backfill or a big export never delays a promotion.
app.conf.task_routes = {
    "inventory.tasks.*": {"queue": "poll"},
    "inventory.tasks.repository_ingest_task": {"queue": "ingest"},
    "promotions.tasks.*": {"queue": "promote"},
    "rollbacks.tasks.*": {"queue": "promote"},
    "audit.tasks.*": {"queue": "audit"},
}
ALL_QUEUES = "default,poll,ingest,promote,audit"


@signals.before_task_publish.connect
def _attach_request_id(headers: dict | None = None, **_: object) -> None:
    """Put the current request id into the message so the task logs under it."""
    request_id = current_request_id()
    if headers is not None and request_id and "correlation_id_portal" not in headers:
        headers["correlation_id_portal"] = request_id


@signals.task_prerun.connect
def _adopt_request_id(task=None, **_: object) -> None:
    """Log a task under the request id that started it (or a fresh one)."""
    request_id = getattr(task.request, "correlation_id_portal", None) if task else None
    set_request_id(request_id or new_request_id())


@signals.task_postrun.connect
def _forget_request_id(**_: object) -> None:
    set_request_id(None)
