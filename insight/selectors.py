"""Reads for the insight pages: DORA inputs, drift and exceptions, in a constant number of queries."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from audit.models import ChangeRecord
from core.durations import format_duration
from core.querytext import query_text
from inventory.models import (
    Application,
    ArgoApplication,
    Commit,
    CommitTouch,
    Deployment,
    Environment,
)
from inventory.selectors import visible_applications, visible_argo_apps
from promotions.models import Promotion, PromotionItem, PromotionState
from rollbacks.models import RollbackRequest

from . import metrics
from .metrics import (
    CommitInfo,
    DeploymentEvent,
    DeploymentRow,
    FailureSignal,
    Report,
    Restore,
)

SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
REVERT_Q = Q(commit__message__startswith='Revert "') | Q(commit__message__contains="This reverts commit ")
DEFAULT_COUNTS = {"week": 12, "month": 6}
MAX_COUNTS = {"week": 104, "month": 36}


def failure_window() -> timedelta:
    return timedelta(hours=settings.INSIGHT_FAILURE_WINDOW_HOURS)


# =============================================================================================
# DORA


@dataclass(frozen=True)
class DoraFilters:
    period: str = "week"
    count: int = 12
    project: str = ""
    app: str = ""
    environment: str = ""
    errors: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, params: Any) -> DoraFilters:
        errors: list[str] = []
        period = (params.get("period") or "week").strip()
        if period not in metrics.PERIODS:
            errors.append("period: choose week or month")
            period = "week"
        raw_count = (params.get("count") or "").strip()
        count = DEFAULT_COUNTS[period]
        if raw_count:
            try:
                count = int(raw_count)
            except ValueError:
                errors.append("count: a whole number")
            else:
                if not 1 <= count <= MAX_COUNTS[period]:
                    errors.append(f"count: between 1 and {MAX_COUNTS[period]}")
                    count = DEFAULT_COUNTS[period]
        return cls(
            period=period,
            count=count,
            project=query_text(params, "project"),
            app=query_text(params, "app"),
            environment=query_text(params, "environment", limit=64),
            errors=tuple(errors),
        )

    def querystring(self) -> str:
        from urllib.parse import urlencode

        values = {
            "period": self.period,
            "count": self.count,
            "project": self.project,
            "app": self.app,
            "environment": self.environment,
        }
        return urlencode({k: v for k, v in values.items() if v})


@dataclass
class DoraInputs:
    """Plain rows for `insight.metrics`, loaded in a fixed number of queries."""

    events: list[DeploymentEvent]
    commits: dict[str, CommitInfo]
    touches: dict[tuple[str, str], list[CommitInfo]]
    healthy: dict[tuple[str, str, str], datetime]
    signals: list[FailureSignal]
    restores: list[Restore]
    projects: list[str] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)


def _scoped_apps(user: Any, filters: DoraFilters) -> QuerySet[Application]:
    apps = visible_applications(user)
    if filters.project:
        apps = apps.filter(project=filters.project)
    if filters.app:
        apps = apps.filter(name=filters.app)
    return apps


def dora_inputs(*, user: Any, filters: DoraFilters, until: datetime) -> DoraInputs:
    """Load every row the DORA metrics of the visible apps need, up to ``until``."""
    all_visible = list(visible_applications(user).values_list("name", "project"))
    apps = {a.pk: a for a in _scoped_apps(user, filters).only("id", "name", "project", "repository_id")}
    env_qs = Environment.objects.filter(production_like=True)
    all_prod = list(env_qs.values_list("name", flat=True))
    if filters.environment:
        env_qs = env_qs.filter(name=filters.environment)
    envs = dict(env_qs.values_list("id", "name"))
    window = failure_window()

    rows = [
        DeploymentRow(
            app=apps[app_id].name,
            project=apps[app_id].project,
            environment=envs[env_id],
            cluster=cluster or "",
            revision=revision,
            deployed_at=deployed_at,
        )
        for app_id, env_id, cluster, revision, deployed_at in Deployment.objects.filter(
            application_id__in=list(apps), environment_id__in=list(envs), deployed_at__lt=until
        ).values_list("application_id", "environment_id", "cluster__name", "revision", "deployed_at")
    ]
    events = metrics.deployment_events(rows)

    revisions = {e.revision for e in events} | {e.previous_revision for e in events if e.previous_revision}
    commits = {
        sha: CommitInfo(sha, seq, committed_at)
        for sha, seq, committed_at in Commit.objects.filter(
            repository_id__in={a.repository_id for a in apps.values() if a.repository_id},
            sha__in=[r for r in revisions if SHA_RE.match(r)],
        ).values_list("sha", "seq", "committed_at")
    }
    touches: dict[tuple[str, str], list[CommitInfo]] = defaultdict(list)
    signals: list[FailureSignal] = []
    previous_seqs = [commits[e.previous_revision].seq for e in events if e.previous_revision in commits]
    if previous_seqs:
        for app_id, env_id, sha, seq, committed_at in (
            CommitTouch.objects.filter(application_id__in=list(apps), seq__gt=min(previous_seqs))
            .filter(Q(environment_id__in=list(envs)) | Q(environment__isnull=True))
            .values_list(
                "application_id",
                "environment_id",
                "commit__sha",
                "seq",
                "commit__committed_at",
            )
        ):
            info = CommitInfo(sha, seq, committed_at)
            for env_name in [envs[env_id]] if env_id else envs.values():
                touches[(apps[app_id].name, env_name)].append(info)

    # Revert commits touching an app (its overlay or its base) are failure signals.
    for app_id, env_id, committed_at, sha in (
        CommitTouch.objects.filter(application_id__in=list(apps), commit__committed_at__lt=until + window)
        .filter(Q(environment_id__in=list(envs)) | Q(environment__isnull=True))
        .filter(REVERT_Q)
        .values_list("application_id", "environment_id", "commit__committed_at", "commit__sha")
    ):
        for env_name in [envs[env_id]] if env_id else envs.values():
            signals.append(FailureSignal(apps[app_id].name, env_name, committed_at, "revert", sha))

    healthy: dict[tuple[str, str, str], datetime] = {}
    app_names = {a.name for a in apps.values()}
    for app_field, env_name, revision, healthy_at in ChangeRecord.objects.filter(
        environment__in=list(envs.values()),
        revision_after__in=[e.revision for e in events],
        healthy_at__isnull=False,
    ).values_list("app", "environment", "revision_after", "healthy_at"):
        for name in app_field.split(","):
            key = (name, env_name, revision)
            if name in app_names and (key not in healthy or healthy_at < healthy[key]):
                healthy[key] = healthy_at

    restores: list[Restore] = []
    rollbacks = RollbackRequest.objects.filter(application_id__in=list(apps), environment_id__in=list(envs))
    for app_id, env_id, pk, state, requested_at, degraded_since, healthy_at in rollbacks.values_list(
        "application_id", "environment_id", "pk", "state", "requested_at", "degraded_since", "healthy_at"
    ):
        name, env_name = apps[app_id].name, envs[env_id]
        if state != RollbackRequest.State.CANCELLED:
            signals.append(FailureSignal(name, env_name, requested_at, "rollback", f"rollback #{pk}"))
        if degraded_since is not None:
            signals.append(FailureSignal(name, env_name, degraded_since, "degraded", f"rollback #{pk}"))
        if healthy_at is not None:
            started = min(requested_at, degraded_since) if degraded_since else requested_at
            restores.append(
                Restore(name, apps[app_id].project, env_name, started, healthy_at, f"rollback #{pk}")
            )

    for app_id, env_id, degraded_at, promotion_id in PromotionItem.objects.filter(
        application_id__in=list(apps), target_env_id__in=list(envs), promotion__degraded_at__isnull=False
    ).values_list("application_id", "target_env_id", "promotion__degraded_at", "promotion_id"):
        signals.append(
            FailureSignal(
                apps[app_id].name, envs[env_id], degraded_at, "degraded", f"promotion #{promotion_id}"
            )
        )
    for app_id, env_id, degraded_since, name in (
        ArgoApplication.objects.live()
        .filter(application_id__in=list(apps), environment_id__in=list(envs), degraded_since__isnull=False)
        .values_list("application_id", "environment_id", "degraded_since", "name")
    ):
        signals.append(FailureSignal(apps[app_id].name, envs[env_id], degraded_since, "degraded", name))

    return DoraInputs(
        events=events,
        commits=commits,
        touches=dict(touches),
        healthy=healthy,
        signals=signals,
        restores=restores,
        projects=sorted({project for _, project in all_visible}),
        apps=sorted(name for name, _ in all_visible),
        environments=all_prod,
    )


def dora_report(*, user: Any, filters: DoraFilters, now: datetime | None = None) -> tuple[Report, DoraInputs]:
    """Return the DORA report of the apps the user may see, bucketed by week or month."""
    now = now or timezone.now()
    starts = metrics.buckets(now, filters.period, filters.count)
    until = metrics.next_bucket(starts[-1], filters.period)
    inputs = dora_inputs(user=user, filters=filters, until=until)
    events = metrics.mark_failures(inputs.events, inputs.signals, window=failure_window())
    samples = metrics.lead_samples(
        events,
        commits=inputs.commits,
        touches=inputs.touches,
        healthy_at=lambda e: inputs.healthy.get((e.app, e.environment, e.revision)),
    )
    report = metrics.build_report(
        events=events,
        samples=samples,
        restores=inputs.restores,
        period=filters.period,
        count=filters.count,
        end=now,
    )
    return report, inputs


# =============================================================================================
# Drift


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
        row.out_of_sync_for = (  # type: ignore[attr-defined]
            format_duration(now - row.out_of_sync_since) if row.out_of_sync_since else ""
        )
        group.rows.append(row)
    return list(groups.values())


def drift_argo_app_get(*, user: Any, pk: int) -> ArgoApplication | None:
    return (
        visible_argo_apps(user).select_related("instance", "application", "environment").filter(pk=pk).first()
    )


# =============================================================================================
# Exceptions


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
    from accounts.permissions import project_filter

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
