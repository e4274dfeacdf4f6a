"""What an app runs in an environment: inventory says which Argo CD apps, Argo CD says their state.

Inventory (kept by the poller) maps app x environment to Argo CD Applications (one per cluster);
promotions read those applications live from Argo CD because a promotion must ship what the source
runs *now* and tracking must see the sync as soon as it happens. When an instance cannot be reached
the stored row is used and the state is marked stale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from integrations.argocd import ArgoCDClient, ArgoCDError, ArgoCDUnavailable, SyncWindowsState
from inventory.appstate import git_revision, sync_result_of
from inventory.clients import argocd_client_for as argo_client
from inventory.models import Application, ArgoApplication, Environment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppView:
    """One Argo CD Application (one cluster) of an app in an environment."""

    name: str
    instance_id: int
    cluster: str
    sync_status: str
    health_status: str
    health_message: str
    revision: str
    images: tuple[str, ...]
    operation_phase: str
    deployed_at: datetime | None
    stale: bool = False
    error: str = ""
    # The last sync operation: the revision it applied (or tried to), its message, when it started.
    operation_revision: str = ""
    operation_message: str = ""
    operation_started_at: datetime | None = None
    sync_result: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def operation_failed(self) -> bool:
        return self.operation_phase in ("Failed", "Error")


@dataclass
class EnvState:
    """All Argo CD Applications of one app in one environment."""

    application: Application
    environment: Environment
    apps: list[AppView] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.apps)

    @property
    def revisions(self) -> set[str]:
        return {a.revision for a in self.apps if a.revision}

    @property
    def revision(self) -> str:
        """The single revision every cluster runs ("" when they disagree or nothing is known)."""
        revs = self.revisions
        return next(iter(revs)) if len(revs) == 1 else ""

    @property
    def images(self) -> tuple[str, ...]:
        """Images every cluster reports, when they all agree (else the first cluster's)."""
        seen = {tuple(sorted(a.images)) for a in self.apps}
        if len(seen) == 1:
            return next(iter(seen))
        return tuple(sorted(self.apps[0].images)) if self.apps else ()

    @property
    def images_agree(self) -> bool:
        return len({tuple(sorted(a.images)) for a in self.apps}) <= 1

    @property
    def synced(self) -> bool:
        return self.known and all(a.sync_status == "Synced" for a in self.apps)

    @property
    def healthy(self) -> bool:
        return self.known and all(a.health_status == "Healthy" for a in self.apps)

    @property
    def degraded(self) -> bool:
        return any(a.health_status in ("Degraded", "Missing") for a in self.apps)

    @property
    def stale(self) -> bool:
        return any(a.stale for a in self.apps)

    @property
    def deployed_at(self) -> datetime | None:
        """When the last cluster finished its sync (None if unknown for any)."""
        times = [a.deployed_at for a in self.apps]
        return max(times) if times and all(times) else None  # type: ignore[type-var]

    def summary(self) -> str:
        if not self.apps:
            return f"no Argo CD application of {self.application.name} in {self.environment.name} is known"
        return "; ".join(
            f"{a.name}: {a.sync_status or '?'}/{a.health_status or '?'} at {a.revision[:8] or '?'}"
            + (" (stale)" if a.stale else "")
            for a in self.apps
        )


def argo_rows(application: Application, environment: Environment) -> list[ArgoApplication]:
    return list(
        ArgoApplication.objects.live()
        .filter(application=application, environment=environment)
        .select_related("instance", "cluster")
        .order_by("name")
    )


def _from_row(row: ArgoApplication, *, stale: bool, error: str = "") -> AppView:
    return AppView(
        name=row.name,
        instance_id=row.instance_id,
        cluster=row.cluster.name if row.cluster else "",
        sync_status=row.sync_status,
        health_status=row.health_status,
        health_message=row.health_message,
        revision=row.revision,
        images=tuple(row.images or ()),
        operation_phase=row.operation_phase,
        deployed_at=row.deployed_at,
        stale=stale,
        error=error,
        operation_message=row.operation_message,
        operation_started_at=row.operation_started_at,
        sync_result=row.sync_result,
    )


def env_state(application: Application, environment: Environment, *, live: bool = True) -> EnvState:
    """Return the state of an app in an environment, read live from Argo CD when possible."""
    state = EnvState(application, environment)
    clients: dict[int, ArgoCDClient] = {}
    repo = application.repository if application.repository_id else None
    repo_urls = {repo.url, repo.url.removesuffix(".git")} if repo else set()
    for row in argo_rows(application, environment):
        if not live:
            state.apps.append(_from_row(row, stale=False))
            continue
        try:
            client = clients.get(row.instance_id) or argo_client(row.instance)
            clients[row.instance_id] = client
            app = client.get_application(row.name)
        except ArgoCDError as exc:
            logger.warning("reading %s from Argo CD failed: %s", row.name, exc)
            state.apps.append(_from_row(row, stale=True, error=str(exc)))
            continue
        # A multi-source app (Helm chart + values): the revision of the GitOps repository's source.
        revision = app.sync_revision or git_revision(app.sync_revisions, app.sources, repo_urls)
        last = app.history[-1] if app.history else None
        last_revision = (
            (last.revision or git_revision(last.revisions, app.sources, repo_urls)) if last else ""
        )
        deployed_at = last.deployed_at if last and last_revision == revision else row.deployed_at
        state.apps.append(
            AppView(
                name=app.name,
                instance_id=row.instance_id,
                cluster=row.cluster.name if row.cluster else "",
                sync_status=app.sync_status or "",
                health_status=app.health_status or "",
                health_message=app.health_message or "",
                revision=revision,
                images=tuple(app.images),
                operation_phase=app.operation_phase or "",
                deployed_at=deployed_at,
                operation_revision=app.sync_result_revision or "",
                operation_message=app.operation_message or "",
                operation_started_at=app.operation_started_at,
                sync_result=sync_result_of(app),
            )
        )
    return state


@dataclass(frozen=True)
class WindowCheck:
    app: str
    can_sync: bool
    detail: str
    error: bool = False


def sync_windows(application: Application, environment: Environment) -> list[WindowCheck]:
    """Ask Argo CD whether each of the app's Applications in `environment` may sync now."""
    checks: list[WindowCheck] = []
    for row in argo_rows(application, environment):
        try:
            result: SyncWindowsState = argo_client(row.instance).application_sync_windows(row.name)
        except ArgoCDUnavailable as exc:
            checks.append(WindowCheck(row.name, False, f"Argo CD unreachable: {exc}", error=True))
            continue
        except ArgoCDError as exc:
            checks.append(WindowCheck(row.name, False, f"sync windows unreadable: {exc}", error=True))
            continue
        active = ", ".join(f"{w.kind} {w.schedule} for {w.duration}" for w in result.active)
        # canSync speaks of manual syncs; the merged PR is applied by an automated sync, which a
        # deny window (even with manualSync) or an inactive allow window holds back.
        denied = any(w.kind == "deny" for w in result.active) or (
            any(w.kind == "allow" for w in result.assigned)
            and not any(w.kind == "allow" for w in result.active)
        )
        if result.can_sync and not denied:
            checks.append(
                WindowCheck(row.name, True, f"sync allowed now{f' (active: {active})' if active else ''}")
            )
        else:
            checks.append(WindowCheck(row.name, False, f"sync denied now by {active or 'a sync window'}"))
    return checks
