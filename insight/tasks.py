"""Thin Celery tasks: each loads by id and calls the service of the same name."""

from __future__ import annotations

from celery import shared_task

from .services import deliveries_sweep, delivery_send, findings_scan


@shared_task(bind=True, acks_late=True, max_retries=None, soft_time_limit=60, time_limit=90)
def delivery_send_task(self, delivery_id: int) -> str:
    """Send one webhook delivery; transient failures retry with exponential backoff (bounded by attempts)."""
    outcome = delivery_send(delivery_id=delivery_id)
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.delay)
    return outcome.status


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def deliveries_sweep_task() -> int:
    """Re-enqueue deliveries whose message was lost."""
    return deliveries_sweep()


@shared_task(acks_late=True, soft_time_limit=120, time_limit=180)
def findings_scan_task() -> dict:
    """Announce new drift and exceptions (and their end) as audit events, which notify subscribers."""
    result = findings_scan()
    return {"opened": len(result.opened), "resolved": len(result.resolved)}
