"""Argo CD REST client: typed dataclasses parsed at the boundary and domain exceptions.

See /work/shared/argocd/API.md for the behaviour this relies on (errors §3, fields §5, watch §6).
Rooms: `client` (ArgoCDClient, session_login), `models` (the dataclasses), `manifests`
(rendered manifests, GetManifests), `parse` (JSON to
dataclasses), `watch` (the application stream), `fields` (the §5 selections), `errors`.
"""

from integrations.argocd.client import ArgoCDClient, session_login
from integrations.argocd.errors import (
    ArgoCDAuthError,
    ArgoCDError,
    ArgoCDNotFound,
    ArgoCDPermissionDenied,
    ArgoCDRequestError,
    ArgoCDResponseError,
    ArgoCDUnavailable,
    RenderError,
)
from integrations.argocd.fields import DEFAULT_LIST_FIELDS, DEFAULT_WATCH_FIELDS, FULL_WATCH_FIELDS
from integrations.argocd.listtexts import (
    ApplicationListTexts,
    revision_neutral,
    revision_neutral_proven,
    split_application_list,
)
from integrations.argocd.manifests import ManifestSet, parse_manifest_response
from integrations.argocd.models import (
    HEALTH_STATUSES,
    OPERATION_PHASES,
    SYNC_STATUSES,
    ApplicationList,
    AppSource,
    ArgoApplication,
    ArgoCluster,
    ArgoProject,
    ArgoVersion,
    Condition,
    HealthStatus,
    HistoryEntry,
    InitialReadChunk,
    RawApplicationList,
    ResourceDiff,
    ResourceNode,
    ResourceTree,
    RevisionMetadata,
    SyncStatus,
    SyncWindow,
    SyncWindows,
    SyncWindowsState,
    WatchEvent,
)
from integrations.argocd.parse import (
    parse_application,
    parse_application_list,
    parse_cluster,
    parse_project,
    parse_resource_diff,
)
from integrations.argocd.watch import WATCH_TIMEOUT, iter_stream_payloads

__all__ = [
    "DEFAULT_LIST_FIELDS",
    "DEFAULT_WATCH_FIELDS",
    "FULL_WATCH_FIELDS",
    "HEALTH_STATUSES",
    "OPERATION_PHASES",
    "SYNC_STATUSES",
    "WATCH_TIMEOUT",
    "AppSource",
    "ApplicationList",
    "ApplicationListTexts",
    "ArgoApplication",
    "ArgoCDAuthError",
    "ArgoCDClient",
    "ArgoCDError",
    "ArgoCDNotFound",
    "ArgoCDPermissionDenied",
    "ArgoCDRequestError",
    "ArgoCDResponseError",
    "ArgoCDUnavailable",
    "ArgoCluster",
    "ArgoProject",
    "ArgoVersion",
    "Condition",
    "HealthStatus",
    "HistoryEntry",
    "InitialReadChunk",
    "ManifestSet",
    "RawApplicationList",
    "RenderError",
    "ResourceDiff",
    "ResourceNode",
    "ResourceTree",
    "RevisionMetadata",
    "SyncStatus",
    "SyncWindow",
    "SyncWindows",
    "SyncWindowsState",
    "WatchEvent",
    "iter_stream_payloads",
    "parse_application",
    "parse_application_list",
    "parse_cluster",
    "parse_manifest_response",
    "parse_project",
    "parse_resource_diff",
    "revision_neutral",
    "revision_neutral_proven",
    "session_login",
    "split_application_list",
]
