"""Record unauthenticated failures without letting anyone grow the ledger one row per request.

Bad webhook signatures, unknown repositories and failed sign-ins come from callers the portal does
not know. Each still belongs in the ledger, but a flood must not append a chained row per request:
per action and source (the client address) and minute, the first occurrence writes its event at
once (``after["count"] == 1``); the rest only increment a counter in the shared cache (Redis), and
:func:`audit_aggregates_flush` (every minute, from beat) writes one summary event per source and
minute with ``after["count"]`` = how many more there were. The number of failures is the sum of
the counts. Past ``AUDIT_AGGREGATE_MAX_SOURCES`` distinct sources in a minute, new sources share
one row (source ``*``), so spreading a flood over many addresses does not help either.

Cache keys (all expire after two hours)::

    audit:agg:<window>:src:<action>:<source>  count of the source in that minute
    audit:agg:<window>:n                      how many slots the window has
    audit:agg:<window>:slot:<i>               (action, source, first fields) of slot i
    audit:agg:<window>:flushed                set by the flush that wrote the window's summaries
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from .context import current_actor_context
from .models import AuditEvent
from .services import audit_event_record

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_TTL = 2 * 3600
LOOKBACK_WINDOWS = 60  # a flush looks back this many minutes (beat may have been down)
MANY_SOURCES = "*"
_SUMMARY_FIELDS = ("target_type", "target_id", "target_label", "message")


def _window(now: float) -> int:
    return int(now // WINDOW_SECONDS)


def _source_key(window: int, action: str, source: str) -> str:
    digest = hashlib.sha256(f"{action}\0{source}".encode()).hexdigest()[:32]
    return f"audit:agg:{window}:src:{digest}"


def _claim_slot(window: int, action: str, source: str, fields: dict[str, Any]) -> str:
    """Register a new (action, source) in the window; return the source it is counted under."""
    count = cache.get_or_set(f"audit:agg:{window}:n", 0, KEY_TTL) or 0
    if source != MANY_SOURCES and count >= settings.AUDIT_AGGREGATE_MAX_SOURCES:
        return MANY_SOURCES
    slot = cache.incr(f"audit:agg:{window}:n")
    cache.set(
        f"audit:agg:{window}:slot:{slot}",
        {"action": action, "source": source, "fields": fields},
        KEY_TTL,
    )
    return source


def _first_in_window(window: int, action: str, source: str) -> bool:
    """Count one occurrence; True for the first of the source in the window."""
    key = _source_key(window, action, source)
    if cache.add(key, 1, KEY_TTL):
        return True
    cache.incr(key)
    return False


def audit_event_record_aggregated(
    *, action: str, source: str | None = None, now: float | None = None, **fields: Any
) -> AuditEvent | None:
    """Record an unauthenticated failure: the first per source and minute now, the rest as a count.

    ``source`` defaults to the client address of the current request. Returns the event written,
    or None when the occurrence was only counted. ``fields`` go to :func:`audit_event_record`.
    """
    source = source if source is not None else (current_actor_context().ip_address or "unknown")
    window = _window(time.time() if now is None else now)
    try:
        if not _first_in_window(window, action, source):
            return None
        if _claim_slot(window, action, source, fields) == MANY_SOURCES and source != MANY_SOURCES:
            # Too many sources this minute: this one is counted with the others, not recorded alone.
            cache.delete(_source_key(window, action, source))
            source = MANY_SOURCES
            if not _first_in_window(window, action, source):
                return None
            _claim_slot(window, action, source, fields)
    except Exception:  # the cache is down: record the event rather than lose it
        logger.exception("audit aggregation unavailable; recording %s without it", action)
    return audit_event_record(
        action=action,
        after={"count": 1, "source": source, "window_seconds": WINDOW_SECONDS},
        **fields,
    )


def audit_aggregates_flush(*, now: float | None = None) -> int:
    """Write one summary event per source for each closed minute that counted more than one; return how many.

    Safe to run twice and from several processes: each window is claimed once in the cache.
    """
    current = _window(time.time() if now is None else now)
    written = 0
    for window in range(current - LOOKBACK_WINDOWS, current):
        slots = cache.get(f"audit:agg:{window}:n")
        claim = f"audit:agg:{window}:flushed"
        if not slots or not cache.add(claim, 1, KEY_TTL):
            continue
        try:
            with transaction.atomic():
                written += _flush_window(window, int(slots))
        except Exception:
            cache.delete(claim)  # nothing was written: the next run tries again
            raise
    return written


def _flush_window(window: int, slots: int) -> int:
    started = datetime.fromtimestamp(window * WINDOW_SECONDS, tz=UTC)
    written = 0
    for slot in range(1, slots + 1):
        entry = cache.get(f"audit:agg:{window}:slot:{slot}")
        if not entry:
            continue
        action, source = entry["action"], entry["source"]
        count = int(cache.get(_source_key(window, action, source)) or 0)
        if count <= 1:
            continue
        first = {name: value for name, value in entry["fields"].items() if name in _SUMMARY_FIELDS}
        what = "from many sources" if source == MANY_SOURCES else f"from {source}"
        audit_event_record(
            action=action,
            system_name="audit_aggregates",
            after={
                "count": count - 1,
                "source": source,
                "window_start": started.isoformat().replace("+00:00", "Z"),
                "window_seconds": WINDOW_SECONDS,
            },
            **{
                **first,
                "message": f"{count - 1} more {action} {what} in the minute from "
                f"{started:%Y-%m-%d %H:%M} UTC (first: {first.get('message', '')})",
            },
        )
        written += 1
    return written
