"""Reads for the exceptions page: changes that bypassed the normal path, scoped to the user."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from accounts.permissions import project_filter
from audit.models import ChangeRecord
from inventory.models import (
    ArgoApplication,
    Commit,
    Deployment,
)
from inventory.selectors import visible_applications
from promotions.models import Promotion, PromotionItem, PromotionState
from rollbacks.models import RollbackRequest


@dataclass(frozen=True)
class ExceptionRow:
    """One fact an auditor must see."""

    kind: str
    key: str  # stable identity, used to notify once per finding
    app: str
    environment: str
    at: datetime | None
    summary: str
    link: str = ""
    project: str = ""


EXCEPTION_KINDS: dict[str, str] = {
    "unsynced_merge": "Merged but not synced",
    "unknown_revision": "Revision not on the tracked branch",
    "out_of_band": "Deployment without a change record",
    "self_approved": "Approved by its requester",
    "emergency_unapproved": "Emergency change without after-the-fact approval",
}


@dataclass
class ExceptionReport:
    sync_lag_minutes: int
    rows: dict[str, list[ExceptionRow]]
    totals: dict[str, int]

    @property
    def sections(self) -> list[tuple[str, str, list[ExceptionRow], int]]:
        return [
            (kind, label, self.rows.get(kind, []), self.totals.get(kind, 0))
            for kind, label in EXCEPTION_KINDS.items()
        ]


def _visible_names(user: Any | None) -> set[str] | None:
    if user is None:
        return None
    if project_filter(user) is None:
        return None
    return set(visible_applications(user).values_list("name", flat=True))


def _record_visible(app_field: str, names: set[str] | None) -> bool:
    return names is None or any(n in names for n in app_field.split(","))


def exceptions_list(
    *,
    user: Any | None,
    sync_lag_minutes: int | None = None,
    now: datetime | None = None,
    limit: int = 100,
    oob_since: datetime | None = None,
) -> ExceptionReport:
    """Return the exceptions of the apps the user may see (``user=None``: everything, for the scanner)."""
    now = now or timezone.now()
    lag = sync_lag_minutes if sync_lag_minutes is not None else int(settings.INSIGHT_SYNC_LAG_MINUTES)
    names = _visible_names(user)
    rows: dict[str, list[ExceptionRow]] = defaultdict(list)
    cutoff = now - timedelta(minutes=lag)

    # 1. Merged but not deployed after N minutes (promotions and rollbacks).
    items = PromotionItem.objects.filter(
        promotion__state=PromotionState.MERGED, promotion__merged_at__lt=cutoff
    ).select_related("promotion", "application", "target_env")
    for item in items.order_by("promotion__merged_at", "id"):
        if names is not None and item.application.name not in names:
            continue
        promotion: Promotion = item.promotion
        rows["unsynced_merge"].append(
            ExceptionRow(
                kind="unsynced_merge",
                key=f"promotion:{promotion.pk}:{item.application_id}",
                app=item.application.name,
                environment=item.target_env.name,
                at=promotion.merged_at,
                summary=f"promotion #{promotion.pk} merged {promotion.merge_commit_sha[:8] or ''} "
                f"and not deployed after {lag} min",
                link=promotion.get_absolute_url(),
                project=item.application.project,
            )
        )
    for rollback in (
        RollbackRequest.objects.filter(state=RollbackRequest.State.MERGED, merged_at__lt=cutoff)
        .select_related("application", "environment")
        .order_by("merged_at", "id")
    ):
        if names is not None and rollback.application.name not in names:
            continue
        rows["unsynced_merge"].append(
            ExceptionRow(
                kind="unsynced_merge",
                key=f"rollback:{rollback.pk}",
                app=rollback.application.name,
                environment=rollback.environment.name,
                at=rollback.merged_at,
                summary=f"rollback #{rollback.pk} merged {rollback.merge_commit_sha[:8]} "
                f"and not deployed after {lag} min",
                link=reverse("rollbacks:detail", args=[rollback.pk]),
                project=rollback.application.project,
            )
        )

    # 2. A revision running in production that the tracked branch's ingested history does not hold.
    known = Commit.objects.filter(
        repository_id=OuterRef("application__repository_id"), sha=OuterRef("revision")
    )
    running = (
        ArgoApplication.objects.live()
        .filter(environment__production_like=True, application__repository__isnull=False)
        .filter(revision__regex=r"^[0-9a-f]{40}$")  # Git SHAs only (not Helm chart versions)
        .annotate(known=Exists(known))
        .filter(known=False)
        .select_related("application__repository", "environment", "cluster")
        .order_by("environment__name", "name")
    )
    for argo_app in running:
        if names is not None and argo_app.application.name not in names:
            continue
        repo = argo_app.application.repository
        ingested = bool(repo.last_ingested_sha or repo.ingested_heads)
        why = (
            "is not in the ingested history of"
            if ingested
            else "cannot be checked: nothing ingested yet from"
        )
        rows["unknown_revision"].append(
            ExceptionRow(
                kind="unknown_revision",
                key=f"revision:{argo_app.pk}:{argo_app.revision}",
                app=argo_app.application.name,
                environment=argo_app.environment.name,
                at=argo_app.deployed_at or argo_app.last_changed_at,
                summary=f"{argo_app.name} runs {argo_app.revision[:12]}, which {why} "
                f"{repo.name} ({argo_app.target_revision or repo.default_branch})",
                link=reverse("inventory:app", args=[argo_app.application.name]),
                project=argo_app.application.project,
            )
        )

    # 3. Deployments in production-like environments not caused by a portal promotion or rollback.
    oob = (
        Deployment.objects.filter(out_of_band=True, environment__production_like=True)
        .select_related("application", "environment", "argo_app")
        .order_by("-deployed_at", "-id")
    )
    if names is not None:
        oob = oob.filter(application__name__in=names)
    if oob_since is not None:
        oob = oob.filter(deployed_at__gte=oob_since)
    rows_oob = list(oob[:limit])
    for deployment in rows_oob:
        app_name = deployment.application.name if deployment.application else deployment.argo_app.name
        who = f" by {deployment.initiated_by}" if deployment.initiated_by else ""
        rows["out_of_band"].append(
            ExceptionRow(
                kind="out_of_band",
                key=f"deployment:{deployment.pk}",
                app=app_name,
                environment=deployment.environment.name if deployment.environment else "",
                at=deployment.deployed_at,
                summary=f"{deployment.argo_app.name} synced {deployment.revision[:12]}{who} outside the portal",
                project=deployment.application.project if deployment.application else "",
            )
        )
    totals = {"out_of_band": oob.count() if len(rows_oob) >= limit else len(rows_oob)}

    # 4. and 5. From the change records.
    records = ChangeRecord.objects.filter(
        Q(separation_of_duties_ok=False) | (Q(emergency=True) & Q(approvers=[]) & ~Q(outcome="abandoned"))
    ).order_by("-occurred_at", "-id")
    for record in records[: limit * 4]:
        if not _record_visible(record.app, names):
            continue
        kind = "self_approved" if record.separation_of_duties_ok is False else "emergency_unapproved"
        summary = (
            f"{record.get_kind_display()} by {record.requester_name} approved by "
            f"{', '.join(record.approvers)}"
            if kind == "self_approved"
            else f"emergency {record.get_kind_display()} by {record.requester_name or '?'}: nobody approved it"
        )
        rows[kind].append(
            ExceptionRow(
                kind=kind,
                key=f"change:{record.pk}",
                app=record.app,
                environment=record.environment,
                at=record.occurred_at,
                summary=summary,
                link=reverse("audit:change_detail", args=[record.pk]),
                project=record.project,
            )
        )
    for kind in EXCEPTION_KINDS:
        totals.setdefault(kind, len(rows.get(kind, [])))
        rows[kind] = rows.get(kind, [])[:limit]
    return ExceptionReport(sync_lag_minutes=lag, rows=dict(rows), totals=totals)
