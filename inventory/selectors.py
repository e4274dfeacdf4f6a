"""Shared reads for pages and the API: what a user may see, staleness, badges, the API rows."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.permissions import has_role, project_filter
from accounts.roles import Role

from .models import (
    Application,
    ArgoApplication,
    ArgoApplicationQuerySet,
    ArgoInstance,
    Deployment,
    GitRepository,
)
from .revisions import RevisionKey, app_revisions

PAGE_SIZE = 50


SYNC_BADGES = {"Synced": "ok", "OutOfSync": "warn", "Unknown": "idle"}
HEALTH_BADGES = {
    "Healthy": "ok",
    "Progressing": "info",
    "Degraded": "bad",
    "Suspended": "idle",
    "Missing": "bad",
    "Unknown": "idle",
}


def stale_after() -> timedelta:
    """Data older than a few missed polls is shown as stale even without a recorded error."""
    return timedelta(seconds=max(4 * settings.POLL_INTERVAL_SECONDS, 120))


def _glob_q(field_name: str, patterns: list[str]) -> Q:
    q = Q(pk__in=[])
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?["):
            q |= Q(**{field_name: pattern})
            continue
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        q |= Q(**{f"{field_name}__regex": f"^{regex}$"})
    return q


def visible_applications(user: Any) -> QuerySet[Application]:
    """Return the applications whose project the user may see."""
    patterns = project_filter(user)
    qs = Application.objects.all()
    return qs if patterns is None else qs.filter(_glob_q("project", patterns))


def visible_argo_apps(user: Any) -> ArgoApplicationQuerySet:
    patterns = project_filter(user)
    qs = ArgoApplication.objects.all()
    return qs if patterns is None else qs.filter(_glob_q("application__project", patterns))


class ActionRights:
    """Which actions a user may start, per (project, environment), computed once per pair.

    `has_role` caches the user's grants on the user object, so a page asks the database once
    however many cells it shows.
    """

    def __init__(self, user: Any) -> None:
        self.user = user
        self._cache: dict[tuple[str, str, str], bool] = {}

    def _has(self, role: str, project: str, environment: str) -> bool:
        key = (role, project, environment)
        if key not in self._cache:
            self._cache[key] = bool(environment) and has_role(
                self.user, role, project=project, environment=environment
            )
        return self._cache[key]

    def promote(self, project: str, environment: str) -> bool:
        """May request a promotion of the project's apps into `environment`."""
        return self._has(Role.RELEASE_MANAGER, project, environment)

    def rollback(self, project: str, environment: str) -> bool:
        """May request a rollback of the project's apps in `environment`."""
        return self._has(Role.ONCALL, project, environment)


def visible_instances(user: Any) -> QuerySet[ArgoInstance]:
    """Return the Argo CD instances that run an app the user may see (all for an unscoped user).

    An instance's name, URL and poll errors tell a scoped viewer about other teams' setups.
    """
    patterns = project_filter(user)
    qs = ArgoInstance.objects.all()
    if patterns is None:
        return qs
    runs = ArgoApplication.objects.filter(_glob_q("application__project", patterns)).values("instance_id")
    return qs.filter(pk__in=runs)


def visible_repositories(user: Any) -> QuerySet[GitRepository]:
    """Return the Git repositories of apps the user may see (all for an unscoped user)."""
    patterns = project_filter(user)
    qs = GitRepository.objects.all()
    if patterns is None:
        return qs
    return qs.filter(pk__in=visible_applications(user).values("repository_id"))


def instance_status_list(*, user: Any) -> tuple[list[ArgoInstance], list[GitRepository], datetime]:
    """Return the Argo CD instances and repositories the user may see, with poll / ingest status."""
    instances = list(visible_instances(user).order_by("name"))
    threshold = timezone.now() - stale_after()
    for inst in instances:
        inst.shown_stale = inst.is_stale or inst.last_success_at is None or inst.last_success_at < threshold  # type: ignore[attr-defined]
    return instances, list(visible_repositories(user).order_by("name")), threshold


def deployment_rows(
    *, user: Any, app: str = "", environment: str = "", cluster: str = "", project: str = ""
) -> list[dict[str, Any]]:
    """Return the current state per app, environment and cluster for the API."""
    qs = (
        visible_argo_apps(user)
        .filter(deleted_at__isnull=True)
        .select_related("application", "environment", "cluster", "instance")
        .order_by("application__name", "environment__order", "cluster__name", "name")
    )
    if app:
        qs = qs.filter(application__name=app)
    if environment:
        qs = qs.filter(environment__name=environment)
    if cluster:
        qs = qs.filter(cluster__name=cluster)
    if project:
        qs = qs.filter(application__project=project)
    threshold = timezone.now() - stale_after()
    instance_stale: dict[int, bool] = {}
    rows = []
    argo_apps = list(qs)
    keys = {
        r.pk: RevisionKey(r.application.repository_id, r.application.pk, r.environment_id, r.running_revision)
        for r in argo_apps
        if r.application is not None
    }
    revisions = app_revisions(keys.values())
    for r in argo_apps:
        if r.instance_id not in instance_stale:
            i = r.instance
            instance_stale[r.instance_id] = bool(
                i.is_stale or i.last_success_at is None or i.last_success_at < threshold
            )
        rows.append(
            {
                "application": r.application.name if r.application else r.name,
                "argo_application": r.name,
                "instance": r.instance.name,
                "project": r.project,
                "environment": r.environment.name if r.environment else None,
                "cluster": r.cluster.name if r.cluster else None,
                "namespace": r.namespace,
                "revision": r.running_revision,
                "app_revision": revisions[keys[r.pk]].shown if r.pk in keys else (r.running_revision),
                "target_revision": r.target_revision,
                "revisions": r.revisions,
                "images": r.images,
                "version": r.version,
                "sync_status": r.sync_status,
                "health_status": r.health_status,
                "deployed_at": r.deployed_at,
                "stale": instance_stale[r.instance_id],
            }
        )
    return rows


def application_history(
    *, application: Application, environment: str = "", limit: int = 100
) -> list[dict[str, Any]]:
    """Return an app's deployments, newest first."""
    qs = Deployment.objects.filter(application=application).select_related(
        "environment", "cluster", "argo_app"
    )
    if environment:
        qs = qs.filter(environment__name=environment)
    return [
        {
            "argo_application": d.argo_app.name,
            "history_id": d.history_id,
            "environment": d.environment.name if d.environment else None,
            "cluster": d.cluster.name if d.cluster else None,
            "revision": d.revision,
            "revisions": d.revisions,
            "version": d.version,
            "images": d.images,
            "deployed_at": d.deployed_at,
            "deploy_started_at": d.deploy_started_at,
            "initiated_by": d.initiated_by,
            "automated": d.automated,
            "out_of_band": d.out_of_band,
        }
        for d in qs.order_by("-deployed_at", "-history_id")[:limit]
    ]
