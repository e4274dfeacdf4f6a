"""Periodic audit work: signed checkpoints of the chain head."""

from __future__ import annotations

from celery import shared_task

from .services import audit_checkpoint_create


@shared_task(acks_late=True, soft_time_limit=120, time_limit=180)
def audit_checkpoint_create_task() -> int | None:
    """Sign the current chain head; safe to run twice (an already signed head is skipped)."""
    checkpoint = audit_checkpoint_create()
    return checkpoint.head_sequence if checkpoint else None
