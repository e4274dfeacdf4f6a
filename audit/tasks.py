"""Periodic audit work: signed checkpoints of the chain head, shipped off the server; aggregated failures."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from .aggregate import audit_aggregates_flush
from .services import audit_checkpoint_create
from .shipping import audit_checkpoints_ship


@shared_task(acks_late=True, soft_time_limit=120, time_limit=180)
def audit_checkpoint_create_task() -> int | None:
    """Sign the current chain head and ship what is unshipped; safe to run twice.

    An already signed head is skipped; a failed shipment fails the task and the next run ships it.
    """
    checkpoint = audit_checkpoint_create()
    if settings.AUDIT_SHIP_TO:
        audit_checkpoints_ship(target=settings.AUDIT_SHIP_TO)
    return checkpoint.head_sequence if checkpoint else None


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def audit_aggregates_flush_task() -> int:
    """Write the summaries of the unauthenticated failures counted in closed minutes; safe to run twice."""
    return audit_aggregates_flush()
