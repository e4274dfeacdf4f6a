"""Poll Argo CD: one instance at a time (claimed), or everything once (`manage.py poll --once`)."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_event_record
from integrations.argocd import ArgoCDClient, ArgoCDError, ArgoCDUnavailable
from integrations.gitrepo import GitError

from .appstate import POLLER, SHA
from .claims import POLL_CLAIM, claim_release, row_claim
from .clients import argocd_client_for
from .config import PortalConfig
from .configapply import ConfigApplyResult, config_apply
from .ingest import IngestResult, repositories_prefetch, repositories_refresh, repository_ingest
from .models import ArgoApplication, ArgoInstance, GitRepository
from .observe import raw_sync_revisions
from .store import (
    Observed,
    apps_mark_removed,
    apps_read_and_store,
    apps_store_narrow,
    apps_store_revisions,
    clusters_upsert,
    instance_lock,
    listed_apps_observe,
    listed_compare,
    listed_state,
)

logger = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class PollResult:
    """Summary of one instance poll (for the task result, logs and the watcher)."""

    instance: str
    skipped: bool = False
    apps_seen: int = 0
    apps_changed: int = 0
    apps_new: int = 0
    apps_removed: int = 0
    new_deployments: int = 0
    error: str = ""
    transient: bool = False
    duration_ms: int = 0
    # Where the cycle's time went (ms since its start, at the end of each step; for logs and the bench).
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


def instance_poll(*, instance_id: int, client: ArgoCDClient | None = None) -> PollResult:
    """Poll one Argo CD instance once: clusters, the app list, full apps that changed, history.

    One poll per instance at a time (claimed with a conditional UPDATE). On failure the instance
    is marked stale with the error; nothing is deleted. Returns a summary.
    """
    started = time.monotonic()
    now = timezone.now()
    instance = ArgoInstance.objects.get(pk=instance_id)
    result = PollResult(instance=instance.name)
    if not row_claim(model=ArgoInstance, pk=instance_id, fields=POLL_CLAIM, now=now):
        result.skipped = True
        return result
    try:
        client = client or argocd_client_for(instance)

        def mark(step: str) -> None:
            result.phases[step] = int((time.monotonic() - started) * 1000)

        # Items are decoded only where their text is not an app's stored list item.
        # The list (seconds for a large fleet) is read while the clusters are, and stored, and the
        # stored apps read: one wait instead of four in a row.
        with ThreadPoolExecutor(1, thread_name_prefix="argocd-list") as pool:
            listed = pool.submit(client.list_application_texts)
            try:
                clusters = client.list_clusters()
                cluster_rows = clusters_upsert(instance=instance, clusters=clusters)
                stored = listed_state(instance)
                # Git too: a new sync revision in the list is then usually ingested already
                # when its app is stored (one `git ls-remote` per repository when nothing moved).
                if settings.POLL_FETCH_GIT:
                    _tracked_repositories_refresh(instance)
                    mark("git_checked")
            finally:
                listing = listed.result()  # its error first: what a failed poll reports
        mark("listed")
        del listed
        # A changed list usually means a new commit: its fetch starts now, while the rest is hashed.
        compared = listed_compare(client=client, listing=listing, stored=stored, on_first_change=ingest_ahead)
        resource_version = listing.resource_version or ""
        del listing  # the answer and its texts (2 x 9 MB at 10,000 apps): what changed is decoded
        live = [name for name, row in stored.items() if row is not None]
        removed = [name for name in live if name not in compared.names]
        refusal = _removal_guard(instance=instance, live=len(live), removed=removed)
        if refusal:
            raise RemovalHeld(refusal)
        result.apps_seen = compared.listed
        mark("compared")
        observed = Observed()
        read: dict[str, Any] = {"changed": 0, "new": 0, "deployments": 0}
        # Synced (and new) apps first: their deployments are stored before the rest is even parsed.
        batches = listed_apps_observe(client=client, instance=instance, compared=compared, stored=stored)
        for number, batch in enumerate(batches):
            done = apps_read_and_store(
                client=client,
                instance=instance,
                observed=batch,
                cluster_rows=cluster_rows,
                now=now,
                fleet=compared.listed,
            )
            observed.merge(batch)
            for key in read:
                read[key] += done[key]
            for step, ms in done.get("timings", {}).items():
                result.phases[f"batch{number}_{step}"] = ms
            mark(f"batch{number}")  # batch 0: the synced apps' deployments are committed
        del stored, compared, batches  # a first cycle's decoded list is ~100 MB
        stats = _poll_store(
            instance=instance,
            observed=observed,
            read=read,
            removed=removed,
            resource_version=resource_version,
            started=started,
            now=now,
        )
        mark("stored")
        result.apps_changed = stats["changed"]
        result.apps_new = stats["new"]
        result.apps_removed = len(removed)
        result.new_deployments = stats["deployments"]
    except (ArgoCDError, GitError, RemovalHeld) as exc:
        result.error = str(exc)[:1000] or exc.__class__.__name__
        result.transient = isinstance(exc, ArgoCDUnavailable)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        instance_mark_stale(instance_id=instance_id, error=result.error, duration_ms=result.duration_ms)
        return result
    except BaseException:
        # The database went away mid-poll (or a bug): release the claim so the next poll runs now
        # instead of after POLL_TIMEOUT_SECONDS, and let the task fail loudly.
        claim_release(ArgoInstance, instance_id, "last_poll_finished_at")
        raise
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def ingest_ahead(text: bytes) -> None:
    """Start fetching the commit a changed list item compares with, when it is not ingested yet.

    A sync shows in the list as a new sync revision (with a monorepo, on every app), and storing
    the synced app's deployment waits for that commit to be ingested (`repositories_ingest_for`).
    Started from the first changed item, the fetch runs while the rest of the list is hashed and
    the changed items parsed, instead of after (0.1-0.25 s of the changed cycle at 10,000 apps).
    A list asked with the sync result (`operationState.operation.sync`, API.md §5) names those too.
    Only a head start: whatever this misses or fails, the store path fetches as before.
    """
    try:
        item = json.loads(text)
        status = item.get("status") if isinstance(item, dict) else None
        sync = status.get("sync") if isinstance(status, dict) else None
        source = (item.get("spec") or {}).get("source") or {}
        wanted = raw_sync_revisions([item])
        revision, url = (sync or {}).get("revision"), source.get("repoURL")
        if isinstance(revision, str) and SHA.fullmatch(revision) and isinstance(url, str) and url:
            wanted.setdefault(url.removesuffix(".git"), set()).add(revision)
        repositories_prefetch(wanted)
    except Exception:  # never the poll's failure: the store path ingests (and reports) as before
        logger.exception("ingest ahead of a poll's changes")


def _tracked_repositories_refresh(instance: ArgoInstance) -> None:
    urls = (
        ArgoApplication.objects.filter(instance=instance, deleted_at__isnull=True)
        .exclude(repo_url="")
        .values_list("repo_url", flat=True)
        .distinct()
    )
    for ingest in repositories_refresh(urls):
        if ingest.error:  # the store path fetches again before judging a deployment on it
            logger.warning(
                "git fetch during the poll of %s: %s: %s", instance.name, ingest.repository, ingest.error
            )


class RemovalHeld(Exception):
    """The list dropped too many apps at once: nothing is removed, the instance is shown stale."""


def _removal_guard(*, instance: ArgoInstance, live: int, removed: list[str]) -> str:
    """Return why this poll's removals are held back, or "" when they may go ahead.

    An empty list, or one that lost more than max(MIN, PERCENT % of the live apps), is what a
    narrowed token or an RBAC change looks like: hold until the drop has lasted CYCLES polls.
    """
    limit = max(settings.ARGOCD_REMOVAL_GUARD_MIN, live * settings.ARGOCD_REMOVAL_GUARD_PERCENT // 100)
    sharp = bool(removed) and (len(removed) == live or len(removed) > limit)
    stats = dict(instance.last_poll_stats or {})
    held = int(stats.get("removals_held", 0)) + 1 if sharp else 0
    if not sharp or held >= settings.ARGOCD_REMOVAL_GUARD_CYCLES:
        return ""
    stats["removals_held"] = held
    ArgoInstance.objects.filter(pk=instance.pk).update(last_poll_stats=stats)
    what = "no applications" if len(removed) == live else f"{live - len(removed)} of {live} applications"
    return (
        f"Argo CD listed {what}: {len(removed)} would be removed at once, so nothing was removed "
        f"(poll {held} of {settings.ARGOCD_REMOVAL_GUARD_CYCLES}; check the token's RBAC)"
    )


@transaction.atomic
def instance_mark_stale(*, instance_id: int, error: str, duration_ms: int | None = None) -> None:
    """Record a failed poll: the instance's data is shown as stale, never deleted."""
    now = timezone.now()
    instance = ArgoInstance.objects.select_for_update().get(pk=instance_id)
    was_stale = instance.is_stale
    instance.is_stale = True
    instance.stale_since = instance.stale_since or now
    instance.last_error = error
    instance.last_poll_finished_at = now
    instance.last_duration_ms = duration_ms
    instance.save(
        update_fields=["is_stale", "stale_since", "last_error", "last_poll_finished_at", "last_duration_ms"]
    )
    if not was_stale:
        audit_event_record(
            action="argocd.instance_stale",
            target_type="argo_instance",
            target_id=instance.pk,
            target_label=instance.name,
            after={"error": error, "last_success_at": _iso(instance.last_success_at)},
            message=f"Argo CD instance {instance.name} is unreachable: {error}",
            system_name=POLLER,
        )


def _poll_store(
    *,
    instance: ArgoInstance,
    observed: Observed,
    read: dict[str, Any],
    removed: list[str],
    resource_version: str,
    started: float,
    now: datetime,
) -> dict[str, Any]:
    """Store the narrow-only changes and removals, and record the poll (the full reads are stored).

    A poll that saw nothing to store (and recovers nothing) only records itself: one UPDATE of the
    instance row, without the transaction and instance lock that writes to its apps take.
    """
    quiet = not (
        observed.narrow or observed.relisted or observed.revision_only or removed or instance.is_stale
    )
    with nullcontext() if quiet else transaction.atomic():
        return _poll_record(
            instance=instance,
            observed=observed,
            read=read,
            removed=removed,
            resource_version=resource_version,
            started=started,
            now=now,
            lock=not quiet,
        )


def _poll_record(
    *,
    instance: ArgoInstance,
    observed: Observed,
    read: dict[str, Any],
    removed: list[str],
    resource_version: str,
    started: float,
    now: datetime,
    lock: bool,
) -> dict[str, Any]:
    if lock:
        instance_lock(instance.pk)
    hashes = observed.hashes
    stats = dict(read)
    stats["changed"] += apps_store_narrow(observed=observed, now=now)
    stats["changed"] += apps_store_revisions(instance=instance, revisions=observed.revision_only)
    if removed:
        apps_mark_removed(instance=instance, names=removed, now=now)

    was_stale = instance.is_stale
    fields = {
        "last_poll_finished_at": timezone.now(),
        "last_success_at": timezone.now(),
        "last_duration_ms": int((time.monotonic() - started) * 1000),
        "last_error": "",
        "is_stale": False,
        "stale_since": None,
        "apps_seen": len(hashes),
        "list_resource_version": resource_version[:64],
        "last_poll_stats": {
            "apps_seen": len(hashes),
            "changed": stats["changed"],
            "new": stats["new"],
            "removed": len(removed),
            "deployments": stats["deployments"],
        },
    }
    ArgoInstance.objects.filter(pk=instance.pk).update(**fields)
    if was_stale:
        audit_event_record(
            action="argocd.instance_recovered",
            target_type="argo_instance",
            target_id=instance.pk,
            target_label=instance.name,
            before={"error": instance.last_error, "stale_since": _iso(instance.stale_since)},
            message=f"Argo CD instance {instance.name} answers again",
            system_name=POLLER,
        )
    return stats


@dataclass
class PollAllResult:
    """Summary of `manage.py poll --once`: the config applied, every ingest and poll."""

    config: ConfigApplyResult | None
    ingests: list[IngestResult]
    polls: list[PollResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.ingests) and all(p.ok for p in self.polls)


def inventory_poll_all(*, config: PortalConfig | None) -> PollAllResult:
    """Apply the configuration, ingest every repository, then poll every Argo CD instance.

    Git first, so that the poller can tell portal-made deployments from out-of-band ones.
    """
    applied = config_apply(config=config) if config is not None else None
    ingests = [
        repository_ingest(repository_id=pk)
        for pk in GitRepository.objects.order_by("name").values_list("pk", flat=True)
    ]
    polls = [
        instance_poll(instance_id=pk)
        for pk in ArgoInstance.objects.order_by("name").values_list("pk", flat=True)
    ]
    return PollAllResult(config=applied, ingests=ingests, polls=polls)
