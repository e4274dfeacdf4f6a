"""Reads for the drift page: OutOfSync Argo CD applications the user may see, by environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from core.durations import format_duration
from inventory.models import (
    ArgoApplication,
)
from inventory.selectors import visible_argo_apps


@dataclass
class DriftGroup:
    environment: str
    production_like: bool
    rows: list[ArgoApplication]


def drift_overview(*, user: Any, now: datetime | None = None) -> list[DriftGroup]:
    """Return the OutOfSync Argo CD applications the user may see, grouped by environment."""
    now = now or timezone.now()
    rows = list(
        visible_argo_apps(user)
        .live()
        .filter(sync_status="OutOfSync")
        .select_related("instance", "application", "environment", "cluster")
        .order_by("environment__order", "environment__name", "out_of_sync_since", "name")
    )
    groups: dict[str, DriftGroup] = {}
    for row in rows:
        name = row.environment.name if row.environment else "(unmapped)"
        group = groups.setdefault(
            name, DriftGroup(name, bool(row.environment and row.environment.production_like), [])
        )
        row.out_of_sync_for = format_duration(now - row.out_of_sync_since) if row.out_of_sync_since else ""
        group.rows.append(row)
    return list(groups.values())


def drift_argo_app_get(*, user: Any, pk: int) -> ArgoApplication | None:
    return (
        visible_argo_apps(user).select_related("instance", "application", "environment").filter(pk=pk).first()
    )
