"""Apply one watch event (`manage.py argocd_watch`) exactly as a poll would apply that app."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import ArgoCDClient

from .appstate import SHA, WATCHER
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
    item: unchanged apps cost nothing more than one query for the burst; apps whose sync status or
    health alone moved are stored in one UPDATE; only the rest are read in full (for their history)
    and stored by the poller's code, so each history entry becomes one Deployment, whoever sees it
    first. The stream's fields leave the sync revision out: a remote without one keeps the stored
    revision (`with_stored_revision`); a full read or the next poll brings the new one.
    """
    instance = ArgoInstance.objects.get(pk=instance_id)
    results = {remote.name: ObserveResult(name=remote.name) for remote in remotes}
    existing = existing_apps(instance, names=list(results))
    filled = [with_stored_revision(remote, existing.get(remote.name)) for remote in remotes]
    observed = apps_observe(client=client, instance=instance, items=filled, existing=existing)
    observed.revisionless = {
        new.name: new
        for old, new in zip(remotes, filled, strict=True)
        if new is not old and new.name in observed.to_read
    }
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


def with_stored_revision(remote: RemoteApp, row: Mapping[str, Any] | None) -> RemoteApp:
    """Put the stored sync revision into a watched app that came without one (DEFAULT_WATCH_FIELDS).

    The stream is asked for no `status.sync.revision` so that a monorepo commit, which moves every
    app's revision and nothing else, streams nothing. Until the app is read in full (a sync, a new
    app) or listed by the poller, the revision the portal holds stands: the state then hashes like
    the list item of the same app at that revision, so a relisted, unchanged app stays unchanged.
    A multi-source app's revisions come from `sync.revisions`, which no narrow state carries: it is
    always read in full.
    """
    if remote.sync_revision is not None or remote.is_multi_source or row is None or not row.get("revision"):
        return remote
    return dataclasses.replace(remote, sync_revision=row["revision"])


def raw_operation_moved(*, instance_id: int, items: Mapping[str, Any]) -> list[str]:
    """Return the names (of undecoded watch apps by name) that are new or whose operation moved."""
    stored = {
        name: (phase, started, finished)
        for name, phase, started, finished in ArgoApplication.objects.filter(
            instance_id=instance_id, name__in=list(items), deleted_at__isnull=True
        ).values_list("name", "operation_phase", "operation_started_at", "operation_finished_at")
    }
    return [name for name, app in items.items() if operation_moved(app, stored.get(name))]


def raw_sync_revisions(items: Iterable[Any]) -> dict[str, set[str]]:
    """The commits (SHAs by repository URL) the operations of undecoded watch apps sync to.

    Read from the operation (`operationState.operation.sync`, known from the moment it is Running)
    and its result, each revision with its source's repository (by position for a multi-source
    app). Branch names and malformed values are left out: this only starts a fetch early
    (`repositories_prefetch`); what is stored comes from the full read.
    """
    wanted: dict[str, set[str]] = {}
    for app in items:
        spec, status = _obj(app, "spec"), _obj(app, "status")
        op = _obj(status, "operationState")
        listed = spec.get("sources")
        sources: list[Any] = listed if isinstance(listed, list) else [spec.get("source")]
        urls = [s.get("repoURL") if isinstance(s, dict) else None for s in sources]
        for part in (_obj(_obj(op, "operation"), "sync"), _obj(op, "syncResult")):
            revisions = part.get("revisions")
            pairs = list(zip(revisions, urls, strict=False)) if isinstance(revisions, list) else []
            if len(urls) == 1:
                pairs.append((part.get("revision"), urls[0]))
            for revision, url in pairs:
                if isinstance(url, str) and url and isinstance(revision, str) and SHA.fullmatch(revision):
                    wanted.setdefault(url.removesuffix(".git"), set()).add(revision)
    return wanted


def _obj(parent: Any, key: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


@transaction.atomic
def argo_application_remove(*, instance_id: int, name: str) -> ObserveResult:
    """Apply a DELETED watch event: soft-delete the row (its deployments stay) and record it."""
    instance = ArgoInstance.objects.get(pk=instance_id)
    instance_lock(instance.pk)
    removed = apps_mark_removed(instance=instance, names=[name], now=timezone.now(), system=WATCHER)
    return ObserveResult(name=name, removed=bool(removed))
