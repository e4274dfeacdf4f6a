"""The one timestamp format of the pages: "2026-12-05 14:03 UTC", the exact ISO time on hover."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def timestamp_text(value: datetime) -> str:
    """Return the minute-precise text with the time zone, e.g. ``2026-12-05 14:03 UTC``."""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or 'UTC'}"


def timestamp_exact(value: datetime) -> str:
    """Return the exact time in ISO 8601 with seconds and offset, e.g. ``2026-12-05T14:03:07+00:00``."""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return local.isoformat(timespec="seconds")
