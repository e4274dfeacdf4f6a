"""Reads for the DORA page: the scoped deployment, commit and failure inputs, and the report."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import ChangeRecord
from insight import metrics
from insight.metrics import (
    CommitInfo,
    DeploymentEvent,
    DeploymentRow,
    FailureSignal,
    Report,
    Restore,
)
from inventory.models import (
    Application,
    ArgoApplication,
    Commit,
    CommitTouch,
    Deployment,
    Environment,
)
from inventory.selectors import visible_applications
from promotions.models import PromotionItem
from rollbacks.models import RollbackRequest

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
            project=(params.get("project") or "").strip()[:200],
            app=(params.get("app") or "").strip()[:200],
            environment=(params.get("environment") or "").strip()[:64],
            errors=tuple(errors),
        )

    def querystring(self) -> str:
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
            if name in app_names and healthy_at and (key not in healthy or healthy_at < healthy[key]):
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
        if degraded_at is None:  # excluded by the filter; this narrows the type
            continue
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
