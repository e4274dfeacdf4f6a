"""Side channels hooked onto other apps' events. No business logic lives here.

1. Notifications. A ``post_save`` receiver on ``audit.AuditEvent`` is the least invasive hook: every
   promotion, rollback, drift and exception step already writes exactly one audit event in its own
   transaction, so no other app has to call us. The receiver only registers an ``on_commit``
   callback (nothing happens if the business transaction rolls back); the callback, ``notify_event``,
   only writes delivery rows and enqueues tasks. It runs after the commit with ``robust=True`` and
   swallows its own errors: a webhook can never block or fail a promotion. A batch appended with
   ``audit_events_record`` sends ``audit.signals.events_recorded`` once instead: one callback, one
   subscription query for the whole batch (``notify_events``).
2. Task failure counters for /metrics: Celery's ``task_failure``/``task_retry`` signals increment a
   Redis hash (only when the broker is Redis); best effort, never raises.
"""

from __future__ import annotations

import functools
import logging

import redis
from celery import signals as celery_signals
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.signals import events_recorded

from .services import notify_event, notify_events

logger = logging.getLogger(__name__)

TASK_FAILURES_KEY = "gitopsportal:metrics:task_failures"
TASK_RETRIES_KEY = "gitopsportal:metrics:task_retries"


def _notify_safely(event: AuditEvent) -> None:
    try:
        notify_event(event)
    except Exception:
        logger.exception(
            "notification of audit event #%s failed (the change itself is committed)", event.sequence
        )


@receiver(post_save, sender=AuditEvent, dispatch_uid="insight.audit_event_notify")
def audit_event_saved(
    sender: type, instance: AuditEvent, created: bool = False, raw: bool = False, **_: object
) -> None:
    """Enqueue notifications of a new audit event once its transaction has committed."""
    if created and not raw:
        transaction.on_commit(functools.partial(_notify_safely, instance), robust=True)


def _notify_batch_safely(events: list[AuditEvent]) -> None:
    try:
        notify_events(events)
    except Exception:
        logger.exception(
            "notification of audit events #%s..#%s failed (the changes themselves are committed)",
            events[0].sequence,
            events[-1].sequence,
        )


@receiver(events_recorded, dispatch_uid="insight.audit_events_notify")
def audit_events_recorded(sender: type, events: list[AuditEvent], **_: object) -> None:
    """Enqueue notifications of a batch of new audit events once their transaction has committed."""
    if events:
        transaction.on_commit(functools.partial(_notify_batch_safely, list(events)), robust=True)


def _count(key: str, task_name: str) -> None:
    if settings.BROKER_IS_EMBEDDED:
        return
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1, socket_connect_timeout=1)
        client.hincrby(key, task_name, 1)
    except Exception:
        logger.warning("could not count %s of %s", key, task_name, exc_info=True)


@celery_signals.task_failure.connect(dispatch_uid="insight.task_failure")
def task_failed(sender: object = None, **_: object) -> None:
    _count(TASK_FAILURES_KEY, getattr(sender, "name", "unknown"))


@celery_signals.task_retry.connect(dispatch_uid="insight.task_retry")
def task_retried(sender: object = None, **_: object) -> None:
    _count(TASK_RETRIES_KEY, getattr(sender, "name", "unknown"))
