"""Filters shared by the audit pages, the API, the exports and `manage.py audit_export`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.querytext import query_text

FILTER_NAMES = ("since", "until", "env", "app", "actor", "action", "text")


def parse_instant(value: str, *, end_of_day: bool = False) -> datetime | None:
    """Parse a date or a date-time; a bare date as ``until`` means the end of that day (UTC)."""
    value = (value or "").strip()
    if not value:
        return None
    problem = f"not a date or date-time: {value!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
    try:
        # parse_* return None for another shape and raise ValueError for impossible values (month 13).
        parsed = parse_datetime(value.replace(" ", "T")) if ("T" in value or " " in value) else None
        if parsed is None:
            day = parse_date(value)
            if day is None:
                raise ValidationError(problem)
            parsed = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    except (ValueError, OverflowError):
        raise ValidationError(problem) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


@dataclass(frozen=True)
class AuditFilters:
    """What to show or export. ``until`` is exclusive; ``action`` also matches its namespace."""

    since: datetime | None = None
    until: datetime | None = None
    env: str = ""
    app: str = ""
    actor: str = ""
    action: str = ""
    text: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditFilters:
        def text(name: str, limit: int = 200) -> str:
            return query_text(data, name, limit=limit)

        since_raw, until_raw = text("since", 40), text("until", 40)
        return cls(
            since=parse_instant(since_raw),
            until=parse_instant(until_raw, end_of_day=True),
            env=text("env", 64),
            app=text("app"),
            actor=text("actor", 150),
            action=text("action", 64),
            text=text("text"),
        )

    @property
    def narrows_events(self) -> bool:
        """True when the result is not a contiguous chain segment (anything but a period)."""
        return bool(self.env or self.app or self.actor or self.action or self.text)

    def as_dict(self) -> dict[str, str]:
        """Return the filters as strings (for manifests, query strings and the export event)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            if value:
                out[f.name] = str(value)
        return out

    def querystring(self, **extra: Any) -> str:
        params = {**self.as_dict(), **{k: v for k, v in extra.items() if v not in (None, "")}}
        return urlencode(params)

    def without_text(self) -> AuditFilters:
        return replace(self, text="")

    def form_value(self, name: str) -> str:
        """Return a value as an <input> shows it (datetime-local for the period)."""
        value = getattr(self, name)
        if isinstance(value, datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        if isinstance(value, date):
            return value.isoformat()
        return value or ""
