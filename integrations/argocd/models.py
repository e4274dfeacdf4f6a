"""Typed dataclasses for what Argo CD answers; parsed at the boundary, never raw JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

SYNC_STATUSES = frozenset({"Synced", "OutOfSync", "Unknown"})
HEALTH_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
OPERATION_PHASES = frozenset({"Running", "Terminating", "Succeeded", "Failed", "Error"})


WINDOW_KINDS = frozenset({"allow", "deny"})


SyncStatus = Literal["Synced", "OutOfSync", "Unknown"]
HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"]


@dataclass(frozen=True)
class AppSource:
    """One entry of spec.source / spec.sources."""

    repo_url: str
    path: str | None
    target_revision: str | None
    chart: str | None
    ref: str | None
    # helm.valueFiles: paths in the chart's source, or `$<ref>/<path>` in the source named by `ref`.
    value_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryEntry:
    """One successful sync from status.history (oldest first)."""

    id: int
    revision: str | None
    revisions: tuple[str, ...]
    deployed_at: datetime | None
    deploy_started_at: datetime | None
    initiated_by_username: str | None
    initiated_by_automated: bool
    source_path: str | None
    repo_url: str | None


@dataclass(frozen=True)
class Condition:
    """One status.conditions entry."""

    type: str
    message: str
    last_transition_time: datetime | None


@dataclass(frozen=True)
class ArgoApplication:
    """An Application as the portal needs it."""

    name: str
    namespace: str | None
    project: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    sources: tuple[AppSource, ...]
    is_multi_source: bool
    destination_server: str | None
    destination_name: str | None
    destination_namespace: str | None
    automated: bool
    sync_status: str | None
    sync_revision: str | None
    sync_revisions: tuple[str, ...]
    health_status: str | None
    health_message: str | None
    operation_phase: str | None
    operation_message: str | None
    operation_started_at: datetime | None
    operation_finished_at: datetime | None
    operation_initiated_by: str | None
    operation_initiated_automated: bool
    operation_pending: bool
    sync_result_revision: str | None
    sync_result_revisions: tuple[str, ...]
    images: tuple[str, ...]
    reconciled_at: datetime | None
    history: tuple[HistoryEntry, ...]
    conditions: tuple[Condition, ...]
    resource_version: str | None
    # Resources of the last sync result counted by their status ("Synced", "SyncFailed", ...).
    sync_result_resource_counts: tuple[tuple[str, int], ...] = ()
    # The revision the pending (top-level `operation`) or else the current/last operation asked for.
    operation_revision: str | None = None

    @property
    def source(self) -> AppSource | None:
        """Return the single (first) source, if any."""
        return self.sources[0] if self.sources else None


@dataclass(frozen=True)
class ApplicationList:
    """A list answer; `resource_version` is where a watch should resume."""

    items: tuple[ArgoApplication, ...]
    resource_version: str | None


@dataclass(frozen=True)
class RawApplicationList:
    """A list answer whose items are still raw JSON objects: parse only the ones that changed."""

    items: tuple[dict[str, Any], ...]
    resource_version: str | None

    @staticmethod
    def name_of(item: dict[str, Any]) -> str | None:
        """Return the item's `metadata.name`, or None when it has none (parse it to learn why)."""
        meta = item.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) and name else None

    @cached_property
    def names(self) -> tuple[str | None, ...]:
        """Every item's `metadata.name` in item order (None where `name_of` finds none)."""
        try:
            names = tuple([item["metadata"]["name"] for item in self.items])
        except (KeyError, TypeError, IndexError):
            return tuple(map(self.name_of, self.items))
        if all(type(name) is str and name for name in names):
            return names
        return tuple(map(self.name_of, self.items))


@dataclass(frozen=True)
class ArgoCluster:
    """A destination cluster (labels filtered client-side: the API has no selector)."""

    server: str
    name: str
    labels: Mapping[str, str]
    connection_status: str | None


@dataclass(frozen=True)
class SyncWindow:
    """A project sync window (the per-app endpoint fills only kind/schedule/duration/manual_sync)."""

    kind: str
    schedule: str
    duration: str
    applications: tuple[str, ...]
    namespaces: tuple[str, ...]
    clusters: tuple[str, ...]
    manual_sync: bool
    time_zone: str | None
    description: str | None


@dataclass(frozen=True)
class ArgoProject:
    """An AppProject with its sync windows."""

    name: str
    sync_windows: tuple[SyncWindow, ...]


@dataclass(frozen=True)
class SyncWindowsState:
    """Answer of /applications/{name}/syncwindows."""

    assigned: tuple[SyncWindow, ...]
    active: tuple[SyncWindow, ...]
    can_sync: bool


SyncWindows = SyncWindowsState  # name used in docs/architecture.md


@dataclass(frozen=True)
class ResourceDiff:
    """One managed resource with its target/live manifests decoded from JSON strings."""

    group: str
    kind: str
    namespace: str
    name: str
    modified: bool
    target_state: dict[str, Any] | None
    live_state: dict[str, Any] | None
    diff: str


@dataclass(frozen=True)
class ResourceNode:
    """One node of the resource tree."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str
    uid: str
    health_status: str | None
    images: tuple[str, ...]
    parent_uids: tuple[str, ...]


@dataclass(frozen=True)
class ResourceTree:
    """The resource tree of an application."""

    nodes: tuple[ResourceNode, ...]
    orphaned_nodes: tuple[ResourceNode, ...]


@dataclass(frozen=True)
class RevisionMetadata:
    """Git commit metadata as Argo CD reports it."""

    author: str
    date: datetime | None
    message: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ArgoVersion:
    """Server version information (only `version` when anonymous)."""

    version: str
    build_date: str | None
    git_commit: str | None


@dataclass(frozen=True)
class WatchEvent:
    """One ADDED / MODIFIED / DELETED event from the application stream."""

    type: str
    application: ArgoApplication


@dataclass(frozen=True)
class InitialReadChunk:
    """Apps the stream's initial burst delivered in full, a chunk at a time (`initial_applications`).

    The last chunk has `final` set; its `missing` names were expected but not delivered (deleted
    meanwhile, not visible, past the time budget, or after `failure`, the stream's error): read
    those one by one.
    """

    apps: dict[str, ArgoApplication]
    final: bool = False
    missing: tuple[str, ...] = ()
    failure: str = ""
