"""Read one Argo CD Application: where it runs, its state hash, the row values the portal stores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.kustomize import Kustomization, KustomizeImage
from integrations.argocd import ArgoApplication as RemoteApp

from .models import Cluster

POLLER = "poller"
WATCHER = "argocd-watch"
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Placement:
    """Where one Argo CD Application runs: app, environment and cluster names."""

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
    if not env and cluster_row is not None and cluster_row.environment is not None:
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


# Not stored, or read only from a full GET (the operation's revision: portal syncs ask the app itself;
# its sync result, which the list's fields leave out: integrations.argocd.fields), so they must not
# make a watched app hash unlike the same app polled from the list. An operation that starts or ends
# still moves the hash (its phase and times). Changing this set changes every app's state hash: the
# first poll after reads each app in full once (as a first poll does), then hashes match again.
_VOLATILE_FIELDS = frozenset(
    {
        "history",
        "conditions",
        "resource_version",
        "reconciled_at",
        "operation_revision",
        "sync_result_revision",
        "sync_result_revisions",
        "sync_result_resource_counts",
    }
)
_HASHED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(RemoteApp) if f.name not in _VOLATILE_FIELDS
)


def _hash_default(value: Any) -> Any:
    # Nested typed values (sources) serialise by their fields; anything else (datetimes) as text.
    # A source without Helm value files hashes as before they were read (no re-read of every app).
    if dataclasses.is_dataclass(value):
        fields = vars(value)
        return (
            fields if fields.get("value_files") else {k: v for k, v in fields.items() if k != "value_files"}
        )
    return str(value)


def state_hash(remote: RemoteApp) -> str:
    """Hash what the portal stores of an app; dataclasses.asdict's deep copy cost more than the fetch."""
    data = {name: getattr(remote, name) for name in _HASHED_FIELDS}
    encoded = json.dumps(data, sort_keys=True, default=_hash_default).encode()
    return hashlib.sha256(encoded).hexdigest()


# Bumped when `integrations.argocd.parse_application` reads more of an item (2: helm.valueFiles).
PARSE_VERSION = b"parse:2\n"


def list_text_hash(text: bytes) -> str:
    """Hash one list item's JSON text as Argo CD sent it: the same text needs no decoding at all.

    Also the proof that a text is one complete item (integrations/argocd/listtexts.py): a hash is
    stored only for a text that was decoded into that app's item. `PARSE_VERSION` goes in first:
    when the parser reads more of an item (Helm `valueFiles`), every item is parsed once again, and
    the apps whose state hash that changes are read in full.
    """
    digest = hashlib.sha256(PARSE_VERSION)
    digest.update(text)
    return digest.hexdigest()


# What Argo CD changes without a new history entry or operation: a commit to a monorepo moves every
# app's sync revision; health and sync status follow the cluster. Nothing else the portal stores
# depends on them, so such a change is stored from the narrow state, without reading the app in full.
NARROW_FIELDS = ("revision", "sync_status", "health_status", "health_message")


def narrow_change_only(remote: RemoteApp, row: Mapping[str, Any]) -> bool:
    """Tell whether `remote` differs from the stored row only in its NARROW_FIELDS.

    The stored values put back into the narrow state must give the stored hash. A multi-source app
    (its revision comes from `sync.revisions`, which the list drops) is always read in full.
    """
    if remote.is_multi_source:
        return False
    before = dataclasses.replace(
        remote,
        # A revision-only list update (inventory.store.apps_store_revisions) left the state hash
        # computed with the revision before.
        sync_revision=row.get("hashed_revision") or row["revision"] or None,
        sync_status=row["sync_status"] or None,
        health_status=row["health_status"] or None,
        health_message=row["health_message"] or None,
    )
    return state_hash(before) == row["state_hash"]


def narrow_values(remote: RemoteApp, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Return the stored fields a narrow-only change sets (NARROW_FIELDS and the since-times)."""
    sync, health = remote.sync_status or "", remote.health_status or ""
    out_of_sync_since = row["out_of_sync_since"] if row["sync_status"] == "OutOfSync" else now
    degraded_since = row["degraded_since"] if row["health_status"] == "Degraded" else now
    return {
        "revision": (remote.sync_revision or "")[:64],
        "sync_status": sync,
        "health_status": health,
        "health_message": remote.health_message or "",
        "out_of_sync_since": out_of_sync_since if sync == "OutOfSync" else None,
        "degraded_since": degraded_since if health == "Degraded" else None,
    }


def _image_ref(image: str) -> KustomizeImage:
    """Split a running image reference (registry/name:tag@digest) like a kustomize `images` entry."""
    ref, _, digest = image.partition("@")
    head, slash, last = ref.rpartition("/")  # a registry port (host:5000/) is not a tag
    name, _, tag = last.partition(":")
    return KustomizeImage(name=head + slash + name, new_tag=tag, digest=digest)


def image_ref_version(images: Sequence[str], app: str) -> str:
    """Return the version of the app's running image, chosen by core.kustomize's one rule.

    The digest when the reference pins one, else the tag ("latest" when it has none).
    """
    chosen = Kustomization(images=[_image_ref(i) for i in images]).image_for(app)
    if chosen is None:
        return ""
    return chosen.digest[:71] if chosen.digest else (chosen.new_tag[:200] or "latest")


def _field(source: Any, name: str) -> Any:
    """A source's field, from the typed AppSource or its stored JSON (`ArgoApplication.sources`)."""
    return source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)


@dataclass(frozen=True)
class ValuesSource:
    """Where a multi-source Helm app reads its values in a GitOps repository.

    Argo CD's multi-source Applications: a chart source lists `helm.valueFiles`; a `$<ref>/<path>`
    entry reads `<path>` from the source whose `ref` is `<ref>` (a plain entry is relative to the
    chart's own path). `position` is that source's 1-based position in `spec.sources`.
    Reference: https://argo-cd.readthedocs.io/en/stable/user-guide/multiple_sources/
    """

    position: int
    repo_url: str
    target_revision: str
    files: tuple[str, ...]

    @property
    def directory(self) -> str:
        """The directory of the first values file: the app's directory in its environment."""
        return posixpath.dirname(self.files[0])


def values_source(sources: Sequence[Any], repo_urls: set[str]) -> ValuesSource | None:
    """Return the GitOps repository's values files of a Helm app's sources, or None."""
    refs = {_field(s, "ref"): (i, s) for i, s in enumerate(sources, 1) if _field(s, "ref")}
    for i, source in enumerate(sources, 1):
        for entry in _field(source, "value_files") or ():
            holder, path = (i, source), entry
            if entry.startswith("$"):
                name, _, path = entry[1:].partition("/")
                if name not in refs:
                    continue
                holder = refs[name]
            elif _field(source, "path"):
                path = posixpath.join(_field(source, "path"), entry)
            position, src = holder
            url = _field(src, "repo_url") or ""
            if url not in repo_urls or not path:
                continue
            files = (posixpath.normpath(path.lstrip("/")),)
            return ValuesSource(position, url, _field(src, "target_revision") or "", files)
    return None


def git_revision(revisions: Sequence[str], sources: Sequence[Any], repo_urls: set[str]) -> str:
    """Pick the Git revision among index-aligned multi-source revisions (the values source's first)."""
    values = values_source(sources, repo_urls)
    if (
        values is not None
        and values.position <= len(revisions)
        and SHA.fullmatch(revisions[values.position - 1] or "")
    ):
        return revisions[values.position - 1]
    for rev, src in zip(revisions, sources, strict=False):
        if _field(src, "repo_url") in repo_urls and SHA.fullmatch(rev or ""):
            return rev
    return next((r for r in revisions if SHA.fullmatch(r or "")), revisions[0] if revisions else "")


def _chart_version(remote: RemoteApp, revisions: Sequence[str]) -> str:
    for rev, src in zip(revisions, remote.sources, strict=False):
        if src.chart and rev and not SHA.fullmatch(rev):
            return rev
    return ""


def _sources_json(remote: RemoteApp) -> list[dict[str, Any]]:
    """The sources as stored (JSON): unset fields and empty value files left out."""
    return [
        {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(s).items()
            if v is not None and v != ()
        }
        for s in remote.sources
    ]


def row_values(remote: RemoteApp, placement: Placement, repo_urls: set[str], now: datetime) -> dict[str, Any]:
    source = remote.source
    revisions = list(remote.sync_revisions or remote.sync_result_revisions)
    revision = remote.sync_revision or ""
    if remote.is_multi_source and not revision:
        revision = git_revision(revisions, remote.sources, repo_urls)
    last = remote.history[-1] if remote.history else None
    if last is not None:
        deployed_revision = last.revision or git_revision(last.revisions, remote.sources, repo_urls)
        deployed_at = last.deployed_at
    else:
        deployed_revision, deployed_at = "", None
        if remote.operation_phase == "Succeeded":
            deployed_revision = remote.sync_result_revision or git_revision(
                remote.sync_result_revisions, remote.sources, repo_urls
            )
            deployed_at = remote.operation_finished_at
    version = image_ref_version(remote.images, placement.app) or _chart_version(remote, revisions)
    git_source = next((s for s in remote.sources if s.repo_url in repo_urls), source)
    repo_url = git_source.repo_url if git_source else ""
    path = (git_source.path if git_source else "") or ""
    target_revision = (git_source.target_revision if git_source else "") or ""
    values = values_source(remote.sources, repo_urls) if remote.is_multi_source else None
    if values is not None:
        # A Helm app whose values live in the GitOps repository: its directory there is the one of
        # its values file (what a promotion edits), not the chart's.
        repo_url, path, target_revision = values.repo_url, values.directory, values.target_revision
    return {
        "project": remote.project[:200],
        "namespace": (remote.destination_namespace or "")[:253],
        "app_namespace": (remote.namespace or "")[:253],
        "labels": dict(remote.labels),
        "repo_url": repo_url[:500],
        "path": path[:500],
        "target_revision": target_revision[:200],
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
        "sync_result": sync_result_of(remote),
        "revision": revision[:64],
        "revisions": revisions,
        "deployed_revision": (deployed_revision or "")[:64],
        "deployed_at": deployed_at,
        "images": list(remote.images),
        "version": version[:200],
        "reconciled_at": remote.reconciled_at,
        "deleted_at": None,
    }


def sync_result_of(remote: RemoteApp) -> dict[str, Any] | None:
    """Return Argo CD's last operationState as change records carry it (None before any sync)."""
    if not remote.operation_phase:
        return None
    counts = dict(remote.sync_result_resource_counts)
    return {
        "phase": remote.operation_phase,
        "message": remote.operation_message or "",
        "revision": remote.sync_result_revision or "",
        "revisions": list(remote.sync_result_revisions),
        "resources": {"total": sum(counts.values()), **counts},
        "started_at": remote.operation_started_at.isoformat() if remote.operation_started_at else None,
        "finished_at": remote.operation_finished_at.isoformat() if remote.operation_finished_at else None,
    }


def change_sync_result(argo_apps: Sequence[Any]) -> dict[str, Any] | None:
    """Return the sync result a change record carries for the Argo CD apps of one app and environment.

    One app: its stored `sync_result` as is. Several (one per cluster): each under `applications`,
    with the worst `phase` on top so the record reads "Succeeded" only when every sync did.
    """
    results = {a.name: a.sync_result for a in argo_apps if a.sync_result}
    if not results:
        return None
    if len(results) == 1:
        return next(iter(results.values()))
    phases = {r.get("phase") for r in results.values()}
    phase = "Succeeded" if phases == {"Succeeded"} else sorted(p for p in phases if p != "Succeeded")[0]
    return {"phase": phase, "applications": results}


ROW_FIELDS = (
    "application", "claimed_app", "ownership_conflict", "environment", "cluster", "project", "namespace", "app_namespace", "labels", "repo_url", "path",
    "target_revision", "sources", "is_multi_source", "automated", "sync_status", "health_status",
    "health_message", "operation_phase", "operation_message", "operation_started_at",
    "operation_finished_at", "sync_result", "revision", "revisions", "deployed_revision", "deployed_at",
    "images", "version", "reconciled_at", "state_hash", "list_hash", "list_neutral_hash", "hashed_revision", "last_changed_at", "out_of_sync_since", "degraded_since",
    "deleted_at",
)  # fmt: skip
