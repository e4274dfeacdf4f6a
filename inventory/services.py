"""Observed-state services: apply the configuration, poll Argo CD, ingest Git history.

Every function here is a `<entity>_<action>` service with keyword-only arguments. Remote calls
(Argo CD, git) happen outside database transactions; each batch of writes is one transaction
that also writes its audit events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit.services import audit_event_record, change_record_sync
from integrations.argocd import ArgoApplication as RemoteApp
from integrations.argocd import (
    ArgoCDClient,
    ArgoCDError,
    ArgoCDNotFound,
    ArgoCDPermissionDenied,
    ArgoCDUnavailable,
    HistoryEntry,
)
from integrations.gitrepo import CommitRecord, GitError, GitMirror

from .config import INFERRED_ORDER, PortalConfig
from .models import (
    Application,
    ArgoApplication,
    ArgoInstance,
    Cluster,
    Commit,
    CommitTouch,
    Deployment,
    Environment,
    GitRepository,
)

logger = logging.getLogger(__name__)

POLLER = "poller"
WATCHER = "argocd-watch"
GIT_INGEST = "git-ingest"
INGEST_BATCH = 2000
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TRAILER = re.compile(r"^(Promotion-Id|Rollback-Id):[ \t]*(\S+)[ \t]*$", re.MULTILINE | re.IGNORECASE)
_PORTAL_BRANCH = re.compile(r"""(?:^|[\s'"/:])((?:promote|rollback)/[A-Za-z0-9._\-/]+)""", re.MULTILINE)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def poll_timeout() -> timedelta:
    """Return how long a claimed poll may run before another worker may take over."""
    return timedelta(seconds=getattr(settings, "POLL_TIMEOUT_SECONDS", 240))


# =============================================================================================
# Configuration


@dataclass
class ConfigApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _upsert(
    model: Any, lookup: dict[str, Any], values: dict[str, Any], label: str, result: ConfigApplyResult
) -> Any:
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        result.created.append(label)
        return obj
    dirty = [name for name, value in values.items() if getattr(obj, name) != value]
    if dirty:
        for name in dirty:
            setattr(obj, name, values[name])
        obj.save(update_fields=dirty)
        # Secrets are reported by name only.
        result.updated.append(f"{label} ({', '.join(sorted(dirty))})")
    return obj


def _mapping_json(config: PortalConfig) -> dict[str, Any]:
    m = config.mapping
    return {
        "app_label": m.app_label,
        "env_label": m.env_label,
        "cluster_label": m.cluster_label,
        "name_pattern": m.name_pattern.pattern if m.name_pattern else "",
        "overrides": {k: dataclasses.asdict(v) for k, v in sorted(m.overrides.items())},
        "infer_environments": config.infer_environments,
        "default_repository": config.default_repository,
    }


@transaction.atomic
def config_apply(*, config: PortalConfig) -> ConfigApplyResult:
    """Upsert instances, repositories, environments and applications declared in the configuration.

    Nothing is deleted: an instance removed from the file keeps its history.
    """
    result = ConfigApplyResult()
    mapping = _mapping_json(config)
    for inst in config.instances:
        _upsert(
            ArgoInstance,
            {"name": inst.name},
            {
                "url": inst.url,
                "token": inst.token,
                "verify_tls": inst.verify_tls,
                "allow_http": inst.allow_http,
                "cluster_env_label": inst.cluster_env_label,
                "mapping": mapping,
            },
            f"argocd:{inst.name}",
            result,
        )
    repos: dict[str, GitRepository] = {}
    for repo in config.repositories:
        repos[repo.name] = _upsert(
            GitRepository,
            {"name": repo.name},
            {
                "url": repo.url,
                "default_branch": repo.default_branch,
                "forge_kind": repo.forge,
                "api_url": repo.api_url,
                "full_name": repo.full_name,
                "web_url": repo.web_url,
                "token": repo.token,
                "webhook_secret": repo.webhook_secret,
                "allow_http": repo.allow_http,
                "base_path_pattern": repo.base_path_pattern,
            },
            f"repository:{repo.name}",
            result,
        )
    for env in config.environments:
        _upsert(
            Environment,
            {"name": env.name},
            {
                "order": env.order * 10,
                "branch": env.branch,
                "path_pattern": env.path_pattern,
                "requires_approval": env.requires_approval,
                "approvals_required": env.approvals_required,
                "soak_minutes": env.soak_minutes,
                "production_like": env.production_like,
                "rollback_auto_merge": env.rollback_auto_merge,
                "allow_skip_from": list(env.allow_skip_from),
            },
            f"environment:{env.name}",
            result,
        )
    default_repo = repos.get(config.default_repository) if config.default_repository else None
    for app in config.applications:
        repo = repos.get(app.repository) if app.repository else default_repo
        values: dict[str, Any] = {"strategy": app.strategy, "strategy_options": app.strategy_options}
        if app.project:
            values["project"] = app.project
        if repo is not None:
            values["repository"] = repo
        _upsert(Application, {"name": app.name}, values, f"application:{app.name}", result)
    if result.changed:
        audit_event_record(
            action="inventory.config_applied",
            target_type="config",
            target_id=config.source,
            target_label=config.source,
            after={"created": result.created, "updated": result.updated},
            message=f"configuration {config.source}: {len(result.created)} created, {len(result.updated)} updated",
            system_name="config",
        )
    return result


def config_apply_from_settings() -> ConfigApplyResult | None:
    """Apply GITOPSPORTAL_CONFIG (or the ARGOCD_* variables) if any is set."""
    from .config import load_config

    config = load_config()
    return config_apply(config=config) if config is not None else None


# =============================================================================================
# Mapping Argo CD Applications to (app, environment, cluster)


@dataclass(frozen=True)
class Placement:
    app: str
    env: str | None
    cluster: str | None


def placement_of(
    remote: RemoteApp, mapping: dict[str, Any], cluster_by_server: dict[str, Cluster]
) -> Placement:
    """Map one Argo CD Application: explicit override, then labels, then the name pattern."""
    override = (mapping.get("overrides") or {}).get(remote.name)
    cluster_row = None
    if remote.destination_server:
        cluster_row = cluster_by_server.get(remote.destination_server)
    if cluster_row is None and remote.destination_name:
        cluster_row = next((c for c in cluster_by_server.values() if c.name == remote.destination_name), None)
    labels = remote.labels
    app = labels.get(mapping.get("app_label") or "app.kubernetes.io/name")
    env = labels.get(mapping.get("env_label") or "env")
    cluster = (
        cluster_row.name if cluster_row is not None else labels.get(mapping.get("cluster_label") or "cluster")
    )
    if not env and cluster_row is not None and cluster_row.environment_id is not None:
        env = cluster_row.environment.name
    if not env and cluster_row is not None:
        env = cluster_row.labels.get("env")
    pattern = mapping.get("name_pattern")
    if pattern:
        match = re.fullmatch(pattern, remote.name)
        if match:
            groups = match.groupdict()
            app = app or groups.get("app")
            env = env or groups.get("env")
            cluster = cluster or groups.get("cluster")
    if override:
        app = override.get("app") or app
        env = override.get("env") or env
        cluster = override.get("cluster") or cluster
    return Placement(app=app or remote.name, env=env or None, cluster=cluster or None)


# =============================================================================================
# Polling Argo CD


@dataclass
class PollResult:
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

    @property
    def ok(self) -> bool:
        return not self.error


_VOLATILE_FIELDS = frozenset({"history", "conditions", "resource_version", "reconciled_at"})
_HASHED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(RemoteApp) if f.name not in _VOLATILE_FIELDS
)


def _hash_default(value: Any) -> Any:
    # Nested typed values (sources) serialise by their fields; anything else (datetimes) as text.
    return vars(value) if dataclasses.is_dataclass(value) else str(value)


def _state_hash(remote: RemoteApp) -> str:
    """Hash what the portal stores of an app; dataclasses.asdict's deep copy cost more than the fetch."""
    data = {name: getattr(remote, name) for name in _HASHED_FIELDS}
    encoded = json.dumps(data, sort_keys=True, default=_hash_default).encode()
    return hashlib.sha256(encoded).hexdigest()


def _version_from_images(images: Sequence[str], app: str) -> str:
    """Return the tag or digest of the app's image (or the first image)."""
    if not images:
        return ""
    chosen = images[0]
    for image in images:
        repo = image.split("@", 1)[0].rsplit(":", 1)[0] if "@" in image else image.rsplit(":", 1)[0]
        if repo.rsplit("/", 1)[-1] == app:
            chosen = image
            break
    if "@" in chosen:
        return chosen.split("@", 1)[1][:71]
    last = chosen.rsplit("/", 1)[-1]
    return last.split(":", 1)[1][:200] if ":" in last else "latest"


def _git_revision(revisions: Sequence[str], sources: Sequence[Any], repo_urls: set[str]) -> str:
    """Pick the Git revision among index-aligned multi-source revisions."""
    for rev, src in zip(revisions, sources, strict=False):
        if getattr(src, "repo_url", None) in repo_urls and _SHA.fullmatch(rev or ""):
            return rev
    return next((r for r in revisions if _SHA.fullmatch(r or "")), revisions[0] if revisions else "")


def _chart_version(remote: RemoteApp, revisions: Sequence[str]) -> str:
    for rev, src in zip(revisions, remote.sources, strict=False):
        if src.chart and rev and not _SHA.fullmatch(rev):
            return rev
    return ""


def _sources_json(remote: RemoteApp) -> list[dict[str, Any]]:
    return [{k: v for k, v in dataclasses.asdict(s).items() if v is not None} for s in remote.sources]


def _row_values(
    remote: RemoteApp, placement: Placement, repo_urls: set[str], now: datetime
) -> dict[str, Any]:
    source = remote.source
    revisions = list(remote.sync_revisions or remote.sync_result_revisions)
    revision = remote.sync_revision or ""
    if remote.is_multi_source and not revision:
        revision = _git_revision(revisions, remote.sources, repo_urls)
    last = remote.history[-1] if remote.history else None
    if last is not None:
        deployed_revision = last.revision or _git_revision(last.revisions, remote.sources, repo_urls)
        deployed_at = last.deployed_at
    else:
        deployed_revision, deployed_at = "", None
        if remote.operation_phase == "Succeeded":
            deployed_revision = remote.sync_result_revision or _git_revision(
                remote.sync_result_revisions, remote.sources, repo_urls
            )
            deployed_at = remote.operation_finished_at
    version = _version_from_images(remote.images, placement.app) or _chart_version(remote, revisions)
    git_source = next((s for s in remote.sources if s.repo_url in repo_urls), source)
    return {
        "project": remote.project[:200],
        "namespace": (remote.destination_namespace or "")[:253],
        "labels": dict(remote.labels),
        "repo_url": (git_source.repo_url if git_source else "")[:500],
        "path": ((git_source.path if git_source else "") or "")[:500],
        "target_revision": ((git_source.target_revision if git_source else "") or "")[:200],
        "sources": _sources_json(remote),
        "is_multi_source": remote.is_multi_source,
        "automated": remote.automated,
        "sync_status": remote.sync_status or "",
        "health_status": remote.health_status or "",
        "health_message": remote.health_message or "",
        "operation_phase": remote.operation_phase or "",
        "operation_message": remote.operation_message or "",
        "operation_started_at": remote.operation_started_at,
        "operation_finished_at": remote.operation_finished_at,
        "revision": revision[:64],
        "revisions": revisions,
        "deployed_revision": (deployed_revision or "")[:64],
        "deployed_at": deployed_at,
        "images": list(remote.images),
        "version": version[:200],
        "reconciled_at": remote.reconciled_at,
        "deleted_at": None,
    }


ROW_FIELDS = (
    "application", "environment", "cluster", "project", "namespace", "labels", "repo_url", "path",
    "target_revision", "sources", "is_multi_source", "automated", "sync_status", "health_status",
    "health_message", "operation_phase", "operation_message", "operation_started_at",
    "operation_finished_at", "revision", "revisions", "deployed_revision", "deployed_at", "images",
    "version", "reconciled_at", "state_hash", "last_changed_at", "out_of_sync_since", "degraded_since",
    "deleted_at",
)  # fmt: skip


def _claim_instance(instance_id: int, now: datetime) -> bool:
    """Claim the instance for one poll with a conditional UPDATE (safe across workers)."""
    free = (
        Q(last_poll_started_at__isnull=True)
        | Q(last_poll_started_at__lt=now - poll_timeout())
        | Q(last_poll_finished_at__isnull=False, last_poll_finished_at__gte=models_f("last_poll_started_at"))
    )
    return ArgoInstance.objects.filter(pk=instance_id).filter(free).update(last_poll_started_at=now) == 1


def models_f(name: str) -> Any:
    from django.db.models import F

    return F(name)


def argocd_client_for(instance: ArgoInstance) -> ArgoCDClient:
    """Return the Argo CD client of an instance (the token never leaves this call)."""
    return ArgoCDClient(
        instance.url,
        str(instance.token or ""),
        verify_tls=instance.verify_tls,
        allow_http=instance.allow_http,
        timeout=(3.05, getattr(settings, "ARGOCD_READ_TIMEOUT_SECONDS", 30)),
    )


def instance_poll(*, instance_id: int, client: ArgoCDClient | None = None) -> PollResult:
    """Poll one Argo CD instance once: clusters, the app list, full apps that changed, history.

    One poll per instance at a time (claimed with a conditional UPDATE). On failure the instance
    is marked stale with the error; nothing is deleted. Returns a summary.
    """
    started = time.monotonic()
    now = timezone.now()
    instance = ArgoInstance.objects.get(pk=instance_id)
    result = PollResult(instance=instance.name)
    if not _claim_instance(instance_id, now):
        result.skipped = True
        return result
    try:
        client = client or argocd_client_for(instance)
        clusters = client.list_clusters()
        listing = client.list_applications()
        cluster_rows = _clusters_upsert(instance=instance, clusters=clusters)
        existing = {
            row["name"]: row
            for row in ArgoApplication.objects.filter(instance=instance).values(
                "id", "name", "state_hash", "deleted_at"
            )
        }
        hashes, full = _changed_full_apps(client=client, items=listing.items, existing=existing)
        repositories_ingest_for(instance=instance, full=full)
        result.apps_seen = len(listing.items)
        seen_names = {item.name for item in listing.items}
        removed = [
            name for name, row in existing.items() if name not in seen_names and row["deleted_at"] is None
        ]
        stats = _poll_store(
            instance=instance,
            full=full,
            hashes=hashes,
            existing=existing,
            removed=removed,
            cluster_rows=cluster_rows,
            resource_version=listing.resource_version or "",
            started=started,
            now=now,
        )
        result.apps_changed = stats["changed"]
        result.apps_new = stats["new"]
        result.apps_removed = len(removed)
        result.new_deployments = stats["deployments"]
    except (ArgoCDError, GitError) as exc:
        result.error = str(exc)[:1000] or exc.__class__.__name__
        result.transient = isinstance(exc, ArgoCDUnavailable)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        instance_mark_stale(instance_id=instance_id, error=result.error, duration_ms=result.duration_ms)
        return result
    except BaseException:
        # The database went away mid-poll (or a bug): release the claim so the next poll runs now
        # instead of after POLL_TIMEOUT_SECONDS, and let the task fail loudly.
        _release_claim(ArgoInstance, instance_id, "last_poll_finished_at")
        raise
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _changed_full_apps(
    *, client: ArgoCDClient, items: Iterable[RemoteApp], existing: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, str], dict[str, RemoteApp]]:
    """Hash the narrow (list or watch) state; read in full only the apps whose hash changed.

    Returns the hashes of all `items` and the full apps of the changed ones. `existing` maps
    names to stored rows with `state_hash` and `deleted_at`.
    """
    hashes = {item.name: _state_hash(item) for item in items}
    full: dict[str, RemoteApp] = {}
    for name, state_hash in hashes.items():
        row = existing.get(name)
        if row is not None and row["state_hash"] == state_hash and row["deleted_at"] is None:
            continue
        # The list's `fields` drop history and sync.revisions (API.md §5): read the full app.
        try:
            full[name] = client.get_application(name)
        except (ArgoCDNotFound, ArgoCDPermissionDenied):
            continue  # deleted between list and get (Argo CD hides missing apps behind 403)
    return hashes, full


def repositories_ingest_for(
    *, instance: ArgoInstance, full: dict[str, RemoteApp], wait: float = 20.0
) -> None:
    """Ingest Git first when a new history entry deploys a commit not ingested yet.

    Telling a portal pull request from an out-of-band change needs the deployed commit in the
    ingested history. The forge webhook usually brings it in before Argo CD syncs; when it has not
    (webhook lost, or the watcher is faster), fetch now rather than call a portal change out of band.
    Only entries not yet stored are looked at, so a revision that never shows up costs one fetch.
    """
    if not full:
        return
    stored = set(
        Deployment.objects.filter(argo_app__instance=instance, argo_app__name__in=list(full)).values_list(
            "argo_app__name", "history_id"
        )
    )
    wanted: dict[str, set[str]] = {}
    for name, remote in full.items():
        for entry in remote.history:
            if (name, entry.id) in stored:
                continue
            pairs = list(zip(entry.revisions, [s.repo_url for s in remote.sources], strict=False))
            if entry.revision:
                pairs.append(
                    (entry.revision, entry.repo_url or (remote.source.repo_url if remote.source else ""))
                )
            for revision, url in pairs:
                if url and _SHA.fullmatch(revision or ""):
                    wanted.setdefault(url.removesuffix(".git"), set()).add(revision)
    if not wanted:
        return
    repos = {r.url.removesuffix(".git"): r for r in GitRepository.objects.all()}
    for url, shas in wanted.items():
        repo = repos.get(url)
        if repo is None or Commit.objects.filter(repository=repo, sha__in=shas).count() == len(shas):
            continue
        if repository_ingest(repository_id=repo.pk).skipped:
            _wait_for_ingest(repository_id=repo.pk, timeout=wait)


def _wait_for_ingest(*, repository_id: int, timeout: float) -> None:
    """Wait (bounded) for an ingest another worker is running to finish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started, finished = GitRepository.objects.filter(pk=repository_id).values_list(
            "last_ingest_started_at", "last_ingest_finished_at"
        )[0]
        if started is None or (finished is not None and finished >= started):
            return
        time.sleep(0.2)


def _release_claim(model: Any, pk: int, finished_field: str) -> None:
    """Mark a claimed poll or ingest as finished after an unexpected error (best effort)."""
    try:
        if not connection.in_atomic_block:
            connection.close()  # a connection broken mid-poll would fail this update too
        model.objects.filter(pk=pk).update(**{finished_field: timezone.now()})
    except Exception:  # the original error is what matters; it is re-raised
        logger.warning("could not release the claim on %s %s", model.__name__, pk, exc_info=True)


def _lock_instance(instance_id: int) -> None:
    """Serialise the poller's and the watcher's writes for one instance (inside a transaction)."""
    list(ArgoInstance.objects.select_for_update().filter(pk=instance_id).values_list("pk", flat=True))


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


def _clusters_upsert(*, instance: ArgoInstance, clusters: Iterable[Any]) -> dict[str, Cluster]:
    envs = {e.name: e for e in Environment.objects.all()}
    rows = {c.server: c for c in Cluster.objects.filter(instance=instance).select_related("environment")}
    label = instance.cluster_env_label or "env"
    with transaction.atomic():
        for remote in clusters:
            env = envs.get(remote.labels.get(label, ""))
            values = {
                "name": (remote.name or remote.server)[:200],
                "labels": dict(remote.labels),
                "environment": env,
                "connection_status": (remote.connection_status or "")[:32],
            }
            row = rows.get(remote.server)
            if row is None:
                rows[remote.server] = Cluster.objects.create(
                    instance=instance, server=remote.server, **values
                )
            elif any(getattr(row, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(row, k, v)
                row.save(update_fields=list(values))
    return rows


def _environments_for(instance: ArgoInstance, names: set[str]) -> dict[str, Environment]:
    envs = {e.name: e for e in Environment.objects.all()}
    missing = sorted(n for n in names if n and n not in envs)
    if missing and instance.mapping.get("infer_environments", not envs):
        for name in missing:
            order = INFERRED_ORDER.index(name) * 10 if name in INFERRED_ORDER else 1000 + len(envs)
            envs[name] = Environment.objects.create(
                name=name[:64], order=order, production_like=name in ("prod", "production")
            )
        audit_event_record(
            action="inventory.environments_inferred",
            target_type="environment",
            target_id=",".join(missing),
            target_label=", ".join(missing),
            after={"environments": missing},
            message=f"environments inferred from Argo CD labels: {', '.join(missing)}",
            system_name=POLLER,
        )
    return envs


def _applications_for(
    placements: dict[str, Placement], projects: dict[str, str], mapping: dict[str, Any]
) -> dict[str, Application]:
    names = {p.app for p in placements.values()}
    apps = {a.name: a for a in Application.objects.filter(name__in=names)}
    default_repo = None
    repo_name = mapping.get("default_repository")
    if repo_name:
        default_repo = GitRepository.objects.filter(name=repo_name).first()
    if default_repo is None:
        default_repo = GitRepository.objects.order_by("pk").first()
    create = []
    for argo_name, placement in placements.items():
        if placement.app not in apps:
            app = Application(
                name=placement.app[:200], project=projects.get(argo_name, "")[:200], repository=default_repo
            )
            apps[placement.app] = app
            create.append(app)
    if create:
        Application.objects.bulk_create(create, ignore_conflicts=True)
        apps.update({a.name: a for a in Application.objects.filter(name__in=[a.name for a in create])})
    # Apps first seen in Git have no project yet: Argo CD's AppProject is the team.
    fix = []
    for argo_name, placement in placements.items():
        app = apps[placement.app]
        if not app.project and projects.get(argo_name):
            app.project = projects[argo_name][:200]
            fix.append(app)
    if fix:
        Application.objects.bulk_update(fix, ["project"])
    return apps


@transaction.atomic
def _poll_store(
    *,
    instance: ArgoInstance,
    full: dict[str, RemoteApp],
    hashes: dict[str, str],
    existing: Mapping[str, Mapping[str, Any]],
    removed: list[str],
    cluster_rows: dict[str, Cluster],
    resource_version: str,
    started: float,
    now: datetime,
) -> dict[str, int]:
    _lock_instance(instance.pk)
    stats = _apps_store(instance=instance, full=full, hashes=hashes, cluster_rows=cluster_rows, now=now)
    if removed:
        _apps_mark_removed(instance=instance, names=removed, now=now)

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


def _apps_mark_removed(
    *, instance: ArgoInstance, names: list[str], now: datetime, system: str = POLLER
) -> int:
    """Soft-delete Argo CD apps no longer reported (history stays) and record it."""
    gone = list(
        ArgoApplication.objects.filter(
            instance=instance, name__in=names, deleted_at__isnull=True
        ).values_list("name", flat=True)
    )
    if not gone:
        return 0
    ArgoApplication.objects.filter(instance=instance, name__in=gone).update(deleted_at=now)
    audit_event_record(
        action="argocd.applications_removed",
        target_type="argo_instance",
        target_id=instance.pk,
        target_label=instance.name,
        after={"applications": sorted(gone)[:200]},
        message=f"{len(gone)} application(s) no longer reported by {instance.name}",
        system_name=system,
    )
    return len(gone)


def _apps_store(
    *,
    instance: ArgoInstance,
    full: dict[str, RemoteApp],
    hashes: dict[str, str],
    cluster_rows: dict[str, Cluster],
    now: datetime,
) -> dict[str, int]:
    """Upsert the rows of fully read apps and record their new history entries (in a transaction)."""
    mapping = instance.mapping or {}
    placements = {name: placement_of(remote, mapping, cluster_rows) for name, remote in full.items()}
    envs = _environments_for(instance, {p.env for p in placements.values() if p.env})
    apps = _applications_for(placements, {n: r.project for n, r in full.items()}, mapping)
    clusters_by_name = {c.name: c for c in cluster_rows.values()}
    repo_urls = set(GitRepository.objects.values_list("url", flat=True))
    repo_urls |= {u.removesuffix(".git") for u in repo_urls}

    rows = {r.name: r for r in ArgoApplication.objects.filter(instance=instance, name__in=list(full))}
    new_rows, changed_rows = [], []
    for name, remote in full.items():
        placement = placements[name]
        values = _row_values(remote, placement, repo_urls, now)
        values["application"] = apps.get(placement.app)
        values["environment"] = envs.get(placement.env or "")
        values["cluster"] = clusters_by_name.get(placement.cluster or "")
        values["state_hash"] = hashes[name]
        row = rows.get(name)
        if row is None:
            row = ArgoApplication(
                instance=instance, name=name, first_seen_at=now, last_changed_at=now, **values
            )
            row.out_of_sync_since = now if values["sync_status"] == "OutOfSync" else None
            row.degraded_since = now if values["health_status"] == "Degraded" else None
            new_rows.append(row)
            rows[name] = row
            continue
        if row.sync_status != "OutOfSync" and values["sync_status"] == "OutOfSync":
            row.out_of_sync_since = now
        elif values["sync_status"] != "OutOfSync":
            row.out_of_sync_since = None
        if row.health_status != "Degraded" and values["health_status"] == "Degraded":
            row.degraded_since = now
        elif values["health_status"] != "Degraded":
            row.degraded_since = None
        for key, value in values.items():
            setattr(row, key, value)
        row.last_changed_at = now
        changed_rows.append(row)
    if new_rows:
        ArgoApplication.objects.bulk_create(new_rows)
    if changed_rows:
        ArgoApplication.objects.bulk_update(changed_rows, ROW_FIELDS, batch_size=500)

    deployments = 0
    versions = _HistoricVersions()
    for name, remote in full.items():
        if remote.history:
            deployments += len(
                deployments_record(
                    argo_app=rows[name], history=remote.history, remote=remote, versions=versions
                )
            )
    return {"changed": len(changed_rows), "new": len(new_rows), "deployments": deployments}


# =============================================================================================
# Following the watch stream (manage.py argocd_watch)


@dataclass
class ObserveResult:
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
    hashes, full = _changed_full_apps(client=client, items=[remote], existing=existing)
    if not full:
        return result
    repositories_ingest_for(instance=instance, full=full)
    cluster_rows = {
        c.server: c for c in Cluster.objects.filter(instance=instance).select_related("environment")
    }
    with transaction.atomic():
        _lock_instance(instance.pk)
        stats = _apps_store(
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
    _lock_instance(instance.pk)
    removed = _apps_mark_removed(instance=instance, names=[name], now=timezone.now(), system=WATCHER)
    return ObserveResult(name=name, removed=bool(removed))


class _HistoricVersions:
    """Read the image version an overlay pinned at an older revision (from the local mirror)."""

    def __init__(self) -> None:
        self._mirrors: dict[int, GitMirror | None] = {}
        self._cache: dict[tuple[int, str, str], str] = {}

    def version(self, repo: GitRepository | None, revision: str, path: str, app: str) -> str:
        if repo is None or not revision or not path or not _SHA.fullmatch(revision):
            return ""
        key = (repo.pk, revision, path)
        if key not in self._cache:
            self._cache[key] = self._read(repo, revision, path, app)
        return self._cache[key]

    def _read(self, repo: GitRepository, revision: str, path: str, app: str) -> str:
        if repo.pk not in self._mirrors:
            mirror_path = mirror_path_for(repo)
            self._mirrors[repo.pk] = mirror_for(repo) if (mirror_path / "HEAD").exists() else None
        mirror = self._mirrors[repo.pk]
        if mirror is None:
            return ""
        try:
            blob = mirror.file_at(revision, f"{path.strip('/')}/kustomization.yaml")
        except GitError:
            return ""
        return kustomization_version(blob.decode("utf-8", "replace"), app) if blob else ""


def kustomization_version(text: str, app: str) -> str:
    """Return newTag / digest of the app's image in a kustomization.yaml (best effort)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return ""
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        return ""
    chosen = None
    for image in images:
        if isinstance(image, dict) and str(image.get("name", "")).rsplit("/", 1)[-1] == app:
            chosen = image
            break
    chosen = chosen or (images[0] if images and isinstance(images[0], dict) else None)
    if not chosen:
        return ""
    return str(chosen.get("digest") or chosen.get("newTag") or "")[:200]


def _out_of_band(
    *,
    entry: HistoryEntry,
    revision: str,
    previous_revision: str,
    seqs: dict[str, int],
    touches: list[tuple[int, str]],
    has_repo: bool,
    production_like: bool = True,
) -> tuple[bool, str]:
    """Tell whether a deployment was not caused by a portal PR, and why.

    Outside production-like environments a plain Git commit (a CI image bump) is the normal change
    path, so only syncs started by hand or revisions missing from the tracked history count there.
    """
    if entry.initiated_by_username and not entry.initiated_by_automated:
        return True, f"initiated by {entry.initiated_by_username} (manual sync or rollback in Argo CD)"
    if not has_repo or not _SHA.fullmatch(revision or ""):
        return False, "no Git repository to check"
    if revision not in seqs:
        return True, "revision not found in the ingested Git history"
    low = seqs.get(previous_revision, 0) if previous_revision else 0
    high = seqs[revision]
    in_range = [ref for seq, ref in touches if low < seq <= high]
    if not in_range:
        return False, "no change to this app in the deployed range"
    if any(in_range):
        return False, "deployed by a portal pull request"
    if not production_like:
        return False, "Git commits to a non-production environment"
    return (
        True,
        f"{len(in_range)} commit(s) without Promotion-Id/Rollback-Id and not from a promote/ or rollback/ branch",
    )


def deployments_record(
    *,
    argo_app: ArgoApplication,
    history: Sequence[HistoryEntry],
    remote: RemoteApp | None = None,
    versions: _HistoricVersions | None = None,
) -> list[Deployment]:
    """Store each status.history entry as a Deployment exactly once; return the new rows.

    The Argo CD application row is locked first, so concurrent polls of the same app serialise and
    the second one finds the rows already there. Each new row writes `deployment.observed`.
    """
    versions = versions or _HistoricVersions()
    with transaction.atomic():
        locked = (
            ArgoApplication.objects.select_for_update(of=("self",))
            .select_related("application__repository", "environment", "cluster")
            .get(pk=argo_app.pk)
        )
        known_rows = list(
            Deployment.objects.filter(argo_app=locked).values_list("history_id", "revision", "version")
        )
        known = {hid: revision for hid, revision, _ in known_rows}
        fresh = [e for e in sorted(history, key=lambda e: e.id) if e.id not in known]
        if not fresh:
            return []
        app = locked.application
        repo = app.repository if app is not None else None
        repo_urls = {repo.url, repo.url.removesuffix(".git")} if repo else set()
        sources = remote.sources if remote is not None else ()

        def rev_of(entry: HistoryEntry) -> str:
            return entry.revision or _git_revision(entry.revisions, sources, repo_urls)

        revisions = {rev_of(e) for e in fresh} | {r for r in known.values() if r}
        seqs: dict[str, int] = {}
        touches: list[tuple[int, str]] = []
        if repo is not None and app is not None:
            seqs = dict(
                Commit.objects.filter(
                    repository=repo, sha__in=[r for r in revisions if _SHA.fullmatch(r or "")]
                ).values_list("sha", "seq")
            )
            if seqs:
                env_q = Q(environment__isnull=True)
                if locked.environment_id:
                    env_q |= Q(environment_id=locked.environment_id)
                touches = list(
                    CommitTouch.objects.filter(env_q, application=app, seq__lte=max(seqs.values()))
                    .order_by("seq")
                    .values_list("seq", "commit__portal_ref")
                )
        previous_by_id = dict(known)
        version_by_id = {hid: version for hid, _, version in known_rows}
        rows: list[Deployment] = []
        reasons: list[str] = []
        befores: list[tuple[str, str]] = []  # (revision, version) deployed before each new row
        current_rev = locked.deployed_revision
        app_name = app.name if app else locked.name
        for entry in fresh:
            revision = rev_of(entry)
            earlier = [hid for hid in previous_by_id if hid < entry.id]
            previous_revision = previous_by_id[max(earlier)] if earlier else ""
            befores.append((previous_revision, version_by_id[max(earlier)] if earlier else ""))
            out_of_band, reason = _out_of_band(
                entry=entry,
                revision=revision,
                previous_revision=previous_revision,
                seqs=seqs,
                touches=touches,
                has_repo=repo is not None,
                production_like=bool(locked.environment and locked.environment.production_like),
            )
            if revision == current_rev and locked.images:
                images, version = list(locked.images), locked.version
            else:
                images = []
                version = versions.version(repo, revision, entry.source_path or locked.path, app_name)
            rows.append(
                Deployment(
                    argo_app=locked,
                    history_id=entry.id,
                    application=app,
                    environment=locked.environment,
                    cluster=locked.cluster,
                    revision=(revision or "")[:64],
                    revisions=list(entry.revisions),
                    deploy_started_at=entry.deploy_started_at,
                    deployed_at=entry.deployed_at or entry.deploy_started_at or timezone.now(),
                    initiated_by=(
                        entry.initiated_by_username or ("automated" if entry.initiated_by_automated else "")
                    )[:200],
                    automated=entry.initiated_by_automated,
                    images=images,
                    version=version,
                    source_path=(entry.source_path or "")[:500],
                    out_of_band=out_of_band,
                )
            )
            reasons.append(reason)
            previous_by_id[entry.id] = revision
            version_by_id[entry.id] = version
        Deployment.objects.bulk_create(rows)
        env_name = locked.environment.name if locked.environment else ""
        cluster_name = locked.cluster.name if locked.cluster else ""
        for row, reason in zip(rows, reasons, strict=True):
            audit_event_record(
                action="deployment.observed",
                target_type="deployment",
                target_id=row.pk,
                target_label=f"{locked.name}#{row.history_id}",
                app=app_name,
                environment=env_name,
                cluster=cluster_name,
                shas=[s for s in [row.revision, *row.revisions] if _SHA.fullmatch(s or "")][:8]
                or [row.revision],
                out_of_band=row.out_of_band,
                after={
                    "argo_app": locked.name,
                    "history_id": row.history_id,
                    "revision": row.revision,
                    "revisions": row.revisions,
                    "version": row.version,
                    "deployed_at": row.deployed_at.isoformat() if row.deployed_at else None,
                    "initiated_by": row.initiated_by,
                    "out_of_band": row.out_of_band,
                    "reason": reason,
                },
                message=f"{app_name} {row.revision[:8]} deployed to {env_name or '?'}/{cluster_name or '?'}"
                + (" (out of band)" if row.out_of_band else ""),
                system_name=POLLER,
            )
        if locked.environment is not None and locked.environment.production_like:
            project = (app.project if app else "") or locked.project
            for row, reason, (revision_before, version_before) in zip(rows, reasons, befores, strict=True):
                if row.out_of_band:
                    _out_of_band_change_record(
                        row=row,
                        app_name=app_name,
                        env_name=env_name,
                        cluster_name=cluster_name,
                        project=project,
                        reason=reason,
                        revision_before=revision_before,
                        version_before=version_before,
                    )
        return rows


def _out_of_band_change_record(
    *,
    row: Deployment,
    app_name: str,
    env_name: str,
    cluster_name: str,
    project: str,
    reason: str,
    revision_before: str,
    version_before: str,
) -> None:
    """Give an out-of-band deployment to a production-like environment its change record."""
    where = f"{env_name}/{cluster_name}" if cluster_name else env_name
    fields: dict[str, Any] = {}
    if row.initiated_by and not row.automated:
        fields["requester_name"] = row.initiated_by  # a person synced by hand in Argo CD
    change_record_sync(
        kind="out_of_band",
        source_type="deployment",
        source_id=str(row.pk),
        app=app_name,
        environment=env_name,
        project=project,
        clusters=[cluster_name] if cluster_name else [],
        title=f"Out-of-band deployment of {app_name} {row.version or row.revision[:8]} to {where}: {reason}"[
            :300
        ],
        revision_before=revision_before,
        revision_after=row.revision,
        versions_before={app_name: version_before} if version_before else {},
        versions_after={app_name: row.version} if row.version else {},
        deployed_at=row.deployed_at,
        outcome="succeeded",
        **fields,
    )


# =============================================================================================
# Git ingest


@dataclass
class IngestResult:
    repository: str
    skipped: bool = False
    commits: int = 0
    touches: int = 0
    error: str = ""
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


def mirror_path_for(repo: GitRepository) -> Path:
    return Path(settings.MIRRORS_DIR) / f"{repo.name}.git"


def mirror_for(repo: GitRepository) -> GitMirror:
    """Return the bare mirror of a repository (token only in git's environment)."""
    return GitMirror(
        mirror_path_for(repo),
        repo.url,
        token=str(repo.token) if repo.token else None,
        allow_http=repo.allow_http,
        allow_file=bool(getattr(settings, "SANDBOX_ENABLED", False))
        and not getattr(settings, "PRODUCTION", False),
        max_file_bytes=settings.GIT_MAX_FILE_BYTES,
    )


def _pattern_regex(pattern: str, env: str | None) -> re.Pattern[str]:
    parts = re.split(r"(\{app\}|\{env\})", pattern.strip("/"))
    out = []
    for part in parts:
        if part == "{app}":
            out.append(r"(?P<app>[^/]+)")
        elif part == "{env}":
            out.append(re.escape(env or ""))
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "(?:/|$)")


@dataclass
class PathMapper:
    """Map changed paths to (app name, environment id or None for the shared base)."""

    matchers: list[tuple[re.Pattern[str], int | None, str | None]]

    @classmethod
    def for_repository(cls, repo: GitRepository, envs: Sequence[Environment]) -> PathMapper:
        matchers: list[tuple[re.Pattern[str], int | None, str | None]] = [
            (_pattern_regex(e.path_pattern, e.name), e.pk, e.branch) for e in envs
        ]
        matchers.append((_pattern_regex(repo.base_path_pattern or "apps/{app}", None), None, None))
        return cls(matchers)

    def map(self, paths: Iterable[str], branch: str) -> dict[tuple[str, int | None], list[str]]:
        out: dict[tuple[str, int | None], list[str]] = {}
        for path in paths:
            for regex, env_id, env_branch in self.matchers:
                if env_branch is not None and env_branch != branch:
                    continue
                match = regex.match(path)
                if match:
                    out.setdefault((match.group("app"), env_id), []).append(path)
                    break
        return out


def portal_ref_of(record: CommitRecord) -> str:
    """Return the Promotion-Id/Rollback-Id trailer or the merged promote/…/rollback/… branch."""
    trailer = _TRAILER.search(record.message)
    if trailer:
        return f"{trailer.group(1)}: {trailer.group(2)}"[:200]
    if record.is_merge:
        branch = _PORTAL_BRANCH.search(record.message)
        if branch:
            return branch.group(1).rstrip(".'\"")[:200]
    return ""


def _claim_repository(repo_id: int, now: datetime) -> bool:
    free = (
        Q(last_ingest_started_at__isnull=True)
        | Q(last_ingest_started_at__lt=now - poll_timeout())
        | Q(
            last_ingest_finished_at__isnull=False,
            last_ingest_finished_at__gte=models_f("last_ingest_started_at"),
        )
    )
    return GitRepository.objects.filter(pk=repo_id).filter(free).update(last_ingest_started_at=now) == 1


def repository_ingest(*, repository_id: int) -> IngestResult:
    """Fetch the mirror and ingest new commits of the default and environment branches.

    One streaming `git log` per branch, commits bulk-inserted in batches with increasing `seq`
    (parents first), and their changed paths mapped to (application, environment).
    """
    started = time.monotonic()
    now = timezone.now()
    repo = GitRepository.objects.get(pk=repository_id)
    result = IngestResult(repository=repo.name)
    if not _claim_repository(repository_id, now):
        result.skipped = True
        return result
    try:
        mirror = mirror_for(repo)
        if not mirror.ensure():
            mirror.fetch()
        envs = list(Environment.objects.all())
        mapper = PathMapper.for_repository(repo, envs)
        branches = [repo.default_branch, *sorted({e.branch for e in envs} - {repo.default_branch})]
        heads = dict(repo.ingested_heads or {})
        known = [sha for sha in set(heads.values()) if _known_in_mirror(mirror, sha)]
        next_seq = (Commit.objects.filter(repository=repo).aggregate(m=Max("seq"))["m"] or 0) + 1
        new_heads = dict(heads)
        for branch in branches:
            head = mirror.branch_head(branch)
            if head is None:
                continue
            if head in known:
                new_heads[branch] = head
                continue
            records = mirror.iter_commits(ref=f"refs/heads/{branch}", known_shas=known)
            for batch in _batches(records, INGEST_BATCH):
                commits, touches = _ingest_batch(
                    repo=repo, batch=batch, mapper=mapper, branch=branch, first_seq=next_seq
                )
                next_seq += len(batch)
                result.commits += commits
                result.touches += touches
            new_heads[branch] = head
            known.append(head)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        GitRepository.objects.filter(pk=repo.pk).update(
            ingested_heads=new_heads,
            last_ingested_sha=new_heads.get(repo.default_branch, repo.last_ingested_sha),
            last_fetch_at=timezone.now(),
            last_ingest_finished_at=timezone.now(),
            last_ingest_duration_ms=result.duration_ms,
            last_error="",
            commits_count=Commit.objects.filter(repository=repo).count(),
        )
    except (GitError, ValueError) as exc:
        result.error = str(exc)[:1000] or exc.__class__.__name__
        result.duration_ms = int((time.monotonic() - started) * 1000)
        GitRepository.objects.filter(pk=repo.pk).update(
            last_error=result.error,
            last_ingest_finished_at=timezone.now(),
            last_ingest_duration_ms=result.duration_ms,
        )
    except BaseException:
        _release_claim(GitRepository, repo.pk, "last_ingest_finished_at")
        raise
    return result


def _known_in_mirror(mirror: GitMirror, sha: str) -> bool:
    try:
        mirror.rev_parse(sha)
    except GitError:
        return False
    return True


def _batches(records: Iterator[CommitRecord], size: int) -> Iterator[list[CommitRecord]]:
    batch: list[CommitRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


COMMIT_COLUMNS = (
    "repository_id", "sha", "seq", "parents", "author_name", "author_email", "authored_at",
    "committer_name", "committed_at", "message", "is_merge", "portal_ref",
)  # fmt: skip
TOUCH_COLUMNS = ("commit_id", "application_id", "environment_id", "seq", "paths")
JSON_COLUMNS = frozenset({"parents", "paths"})


def _insert_rows(model: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert rows, skipping ones that already exist (unique constraints).

    PostgreSQL: COPY into a temporary table, then INSERT … ON CONFLICT DO NOTHING (an order of
    magnitude faster than building model instances for 100,000 commits). Elsewhere: bulk_create.
    Table and column names come from the model's metadata, never from input.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        objs = [model(**dict(zip(columns, row, strict=True))) for row in rows]
        model.objects.bulk_create(objs, ignore_conflicts=True, batch_size=1000)
        return
    table = connection.ops.quote_name(model._meta.db_table)
    temp = connection.ops.quote_name(f"_ingest_{model._meta.db_table}")
    cols = ", ".join(connection.ops.quote_name(c) for c in columns)
    json_cols = {i for i, c in enumerate(columns) if c in JSON_COLUMNS}
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {temp} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"  # noqa: S608 - quoted model metadata
        )
        raw = cursor.cursor
        with raw.copy(f"COPY {temp} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(v) if i in json_cols else v for i, v in enumerate(row)])
        cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {temp} ON CONFLICT DO NOTHING")  # noqa: S608
        cursor.execute(f"TRUNCATE {temp}")


@transaction.atomic
def _ingest_batch(
    *, repo: GitRepository, batch: list[CommitRecord], mapper: PathMapper, branch: str, first_seq: int
) -> tuple[int, int]:
    rows = [
        (
            repo.pk,
            r.sha,
            first_seq + i,
            list(r.parents),
            r.author_name[:200],
            r.author_email[:200],
            r.authored_at,
            r.committer_name[:200],
            r.committed_at,
            r.message,
            r.is_merge,
            portal_ref_of(r),
        )
        for i, r in enumerate(batch)
    ]
    _insert_rows(Commit, COMMIT_COLUMNS, rows)
    stored = {
        sha: (pk, seq)
        for sha, pk, seq in Commit.objects.filter(
            repository=repo, sha__in=[r.sha for r in batch]
        ).values_list("sha", "id", "seq")
    }
    mapped: list[tuple[str, str, int | None, list[str]]] = []
    names: set[str] = set()
    for record in batch:
        paths = [c.path for c in record.changes] + [c.old_path for c in record.changes if c.old_path]
        for (app, env_id), app_paths in mapper.map(paths, branch).items():
            mapped.append((record.sha, app, env_id, app_paths))
            names.add(app)
    if not mapped:
        return len(stored), 0
    apps = dict(Application.objects.filter(name__in=names).values_list("name", "id"))
    missing = sorted(names - set(apps))
    if missing:
        # Apps are discovered from the repository layout; the poller fills in their project.
        Application.objects.bulk_create(
            [Application(name=n[:200], project="", repository=repo) for n in missing], ignore_conflicts=True
        )
        apps = dict(Application.objects.filter(name__in=names).values_list("name", "id"))
    touches = [
        (stored[sha][0], apps[app], env_id, stored[sha][1], paths[:50])
        for sha, app, env_id, paths in mapped
        if sha in stored and app in apps
    ]
    _insert_rows(CommitTouch, TOUCH_COLUMNS, touches)
    return len(stored), len(touches)


# =============================================================================================
# Diffs between environments (from the mirror)


@dataclass(frozen=True)
class OverlayDiff:
    left: str
    right: str
    left_revision: str
    right_revision: str
    text: str
    error: str = ""


def overlay_diff(
    *,
    application: Application,
    left: Environment,
    right: Environment,
    left_revision: str = "",
    right_revision: str = "",
) -> OverlayDiff:
    """Return a unified diff of two environments' overlay files for an app (left → right)."""
    repo = application.repository
    if repo is None:
        return OverlayDiff(left.name, right.name, "", "", "", "no repository configured for this app")
    if not (mirror_path_for(repo) / "HEAD").exists():
        return OverlayDiff(left.name, right.name, "", "", "", "the repository has not been mirrored yet")
    mirror = mirror_for(repo)
    try:
        lrev = mirror.rev_parse(left_revision or f"refs/heads/{left.branch}")
        rrev = mirror.rev_parse(right_revision or f"refs/heads/{right.branch}")
        lpath, rpath = left.app_path(application.name), right.app_path(application.name)
        # File by file, relative to each overlay directory (a file only on one side is all +/-).
        text = mirror.diff_paths(lrev, lpath, rrev, rpath)
        return OverlayDiff(left.name, right.name, lrev, rrev, text)
    except GitError as exc:
        return OverlayDiff(left.name, right.name, "", "", "", str(exc)[:500])


# =============================================================================================
# Poll everything once (manage.py poll --once)


@dataclass
class PollAllResult:
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
