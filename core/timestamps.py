"""The one timestamp format of the pages: "2026-12-05 14:03 UTC", the exact ISO time on hover."""

from __future__ import annotations

from datetime import datetime, tzinfo

from django.utils import timezone


def _local(value: datetime, tz: tzinfo | None) -> datetime:
    if not timezone.is_aware(value):
        return value
    # Passing the zone spares a page of hundreds of timestamps the current-zone lookup per value.
    return value.astimezone(tz) if tz is not None else timezone.localtime(value)


def timestamp_text(value: datetime, tz: tzinfo | None = None) -> str:
    """Return the minute-precise text with the time zone, e.g. ``2026-12-05 14:03 UTC``."""
    local = _local(value, tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or 'UTC'}"


def timestamp_exact(value: datetime, tz: tzinfo | None = None) -> str:
    """Return the exact time in ISO 8601 with seconds and offset, e.g. ``2026-12-05T14:03:07+00:00``."""
    return _local(value, tz).isoformat(timespec="seconds")
