"""Apply one watch event (`manage.py argocd_watch`) exactly as a poll would apply that app."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import ArgoCDClient

from .appstate import WATCHER
from .ingest import repositories_ingest_for
from .models import ArgoApplication, ArgoInstance, Cluster
from .store import apps_mark_removed, apps_store, changed_full_apps, instance_lock


@dataclass
class ObserveResult:
    """What one watch event changed."""

    name: str
    changed: bool = False
    new: bool = False
    removed: bool = False
    new_deployments: int = 0


def argo_application_observe(*, instance_id: int, remote: RemoteApp, client: ArgoCDClient) -> ObserveResult:
    """Apply one ADDED/MODIFIED watch event exactly as a poll would apply that app.

    `remote` is the narrow state from the stream (DEFAULT_WATCH_FIELDS), hashed like a list item:
    an unchanged app costs one query; a changed one is read in full (for its history) and stored by
    the poller's code, so each history entry becomes one Deployment, whoever sees it first.
    """
    instance = ArgoInstance.objects.get(pk=instance_id)
    result = ObserveResult(name=remote.name)
    existing = {
        row["name"]: row
        for row in ArgoApplication.objects.filter(instance=instance, name=remote.name).values(
            "name", "state_hash", "deleted_at"
        )
    }
    hashes, full = changed_full_apps(client=client, items=[remote], existing=existing)
    if not full:
        return result
    repositories_ingest_for(instance=instance, full=full)
    cluster_rows = {
        c.server: c for c in Cluster.objects.filter(instance=instance).select_related("environment")
    }
    with transaction.atomic():
        instance_lock(instance.pk)
        stats = apps_store(
            instance=instance, full=full, hashes=hashes, cluster_rows=cluster_rows, now=timezone.now()
        )
    result.changed = bool(stats["changed"] or stats["new"])
    result.new = bool(stats["new"])
    result.new_deployments = stats["deployments"]
    return result


@transaction.atomic
def argo_application_remove(*, instance_id: int, name: str) -> ObserveResult:
    """Apply a DELETED watch event: soft-delete the row (its deployments stay) and record it."""
    instance = ArgoInstance.objects.get(pk=instance_id)
    instance_lock(instance.pk)
    removed = apps_mark_removed(instance=instance, names=[name], now=timezone.now(), system=WATCHER)
    return ObserveResult(name=name, removed=bool(removed))
