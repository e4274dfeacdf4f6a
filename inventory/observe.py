"""Apply one watch event (`manage.py argocd_watch`) exactly as a poll would apply that app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import ArgoCDClient

from .appstate import WATCHER
from .models import ArgoApplication, ArgoInstance, Cluster
from .store import (
    apps_mark_removed,
    apps_observe,
    apps_read_and_store,
    apps_store_narrow,
    existing_apps,
    instance_lock,
    operation_moved,
)


@dataclass
class ObserveResult:
    """What one watch event changed."""

    name: str
    changed: bool = False
    new: bool = False
    removed: bool = False
    new_deployments: int = 0


def argo_application_observe(*, instance_id: int, remote: RemoteApp, client: ArgoCDClient) -> ObserveResult:
    """Apply one ADDED/MODIFIED watch event exactly as a poll would apply that app."""
    return argo_applications_observe(instance_id=instance_id, remotes=[remote], client=client)[0]


def argo_applications_observe(
    *, instance_id: int, remotes: Sequence[RemoteApp], client: ArgoCDClient
) -> list[ObserveResult]:
    """Apply a burst of ADDED/MODIFIED watch events (one per app, the latest) as a poll would.

    Each `remote` is the narrow state from the stream (DEFAULT_WATCH_FIELDS), hashed like a list
    item: unchanged apps cost nothing more than one query for the burst; apps whose sync revision,
    sync status or health alone moved (a monorepo commit moves them all) are stored in one UPDATE;
    only the rest are read in full (for their history) and stored by the poller's code, so each
    history entry becomes one Deployment, whoever sees it first.
    """
    instance = ArgoInstance.objects.get(pk=instance_id)
    results = {remote.name: ObserveResult(name=remote.name) for remote in remotes}
    existing = existing_apps(instance, names=list(results))
    observed = apps_observe(client=client, instance=instance, items=remotes, existing=existing)
    if not observed.to_read and not observed.narrow:
        return list(results.values())
    cluster_rows = {
        c.server: c for c in Cluster.objects.filter(instance=instance).select_related("environment")
    }
    now = timezone.now()
    read = apps_read_and_store(
        client=client, instance=instance, observed=observed, cluster_rows=cluster_rows, now=now
    )
    if observed.narrow:
        with transaction.atomic():
            instance_lock(instance.pk)
            apps_store_narrow(observed=observed, now=now)
    for name in (*read["read"], *observed.narrow):
        results[name].changed = True
        results[name].new = name not in existing
    for name, count in read["by_app"].items():
        results[name].new_deployments = count
    return list(results.values())


def raw_operation_moved(*, instance_id: int, items: Mapping[str, Any]) -> list[str]:
    """Return the names (of undecoded watch apps by name) that are new or whose operation moved."""
    stored = {
        name: (phase, started, finished)
        for name, phase, started, finished in ArgoApplication.objects.filter(
            instance_id=instance_id, name__in=list(items), deleted_at__isnull=True
        ).values_list("name", "operation_phase", "operation_started_at", "operation_finished_at")
    }
    return [name for name, app in items.items() if operation_moved(app, stored.get(name))]


@transaction.atomic
def argo_application_remove(*, instance_id: int, name: str) -> ObserveResult:
    """Apply a DELETED watch event: soft-delete the row (its deployments stay) and record it."""
    instance = ArgoInstance.objects.get(pk=instance_id)
    instance_lock(instance.pk)
    removed = apps_mark_removed(instance=instance, names=[name], now=timezone.now(), system=WATCHER)
    return ObserveResult(name=name, removed=bool(removed))
