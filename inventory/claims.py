"""Claim a poll or an ingest for one worker: a conditional UPDATE that expires after a timeout.

The row is free when it was never claimed, when its last run finished, or when the claim is
older than POLL_TIMEOUT_SECONDS (the worker that held it died). Claiming and releasing are safe
across processes: the database row is the only lock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

logger = logging.getLogger(__name__)


def poll_timeout() -> timedelta:
    """Return how long a claimed poll may run before another worker may take over."""
    return timedelta(seconds=settings.POLL_TIMEOUT_SECONDS)


# (started, finished) timestamp fields of each kind of claimed run.
POLL_CLAIM = ("last_poll_started_at", "last_poll_finished_at")  # ArgoInstance
INGEST_CLAIM = ("last_ingest_started_at", "last_ingest_finished_at")  # GitRepository


def row_claim(*, model: Any, pk: int, fields: tuple[str, str], now: datetime) -> bool:
    """Claim one row for a run by setting its started field to `now` if the row is free."""
    started_field, finished_field = fields
    free = (
        Q(**{f"{started_field}__isnull": True})
        | Q(**{f"{started_field}__lt": now - poll_timeout()})
        | Q(**{f"{finished_field}__isnull": False, f"{finished_field}__gte": F(started_field)})
    )
    return model.objects.filter(pk=pk).filter(free).update(**{started_field: now}) == 1


def claim_release(model: Any, pk: int, finished_field: str) -> None:
    """Mark a claimed poll or ingest as finished after an unexpected error (best effort)."""
    try:
        if not connection.in_atomic_block:
            connection.close()  # a connection broken mid-poll would fail this update too
        model.objects.filter(pk=pk).update(**{finished_field: timezone.now()})
    except Exception:  # the original error is what matters; it is re-raised
        logger.warning("could not release the claim on %s %s", model.__name__, pk, exc_info=True)
