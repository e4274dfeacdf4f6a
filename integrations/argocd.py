"""Argo CD REST client: typed dataclasses parsed at the boundary and domain exceptions.

See /work/shared/argocd/API.md for the behaviour this relies on (errors §3, fields §5, watch §6).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import requests

from integrations.argocd_resources import (
    ROLLOUT_GROUP,
    ROLLOUT_KIND,
    ROLLOUT_VERSION,
    ApplicationSet,
    Rollout,
    owner_application_set,
    parse_application_set_list,
    parse_resource_manifest,
    parse_rollout,
)
from integrations.http import (
    DEFAULT_TIMEOUT,
    HttpClient,
    HttpError,
    HttpResponse,
    JsonReader,
    ParseError,
    ResponseTooLarge,
    Secret,
    Timeout,
    TransportError,
    UnsafeURL,
)

DOCS = "https://argo-cd.readthedocs.io/en/stable/developer-guide/api-docs/"

# The §5 whitelist subset the poller needs. The list's own metadata (resourceVersion) always comes
# back; per-item resourceVersion, history and conditions are dropped by the server when filtering.
DEFAULT_LIST_FIELDS: tuple[str, ...] = (
    "metadata.resourceVersion",
    "items.metadata.name",
    "items.metadata.namespace",
    "items.metadata.labels",
    "items.metadata.annotations",
    "items.spec",
    "items.status.sync.status",
    "items.status.sync.revision",
    "items.status.health",
    "items.status.summary",
    "items.status.operationState.phase",
    "items.status.operationState.startedAt",
    "items.status.operationState.finishedAt",
    "items.status.operationState.operation.sync",
)

# The same state for the watch stream, whose `fields` are generic paths under `result.` (§5). The
# list's `operationState.operation.sync` quirk returns the sync *result*; here it is asked for by its
# real path, so a watched app parses to exactly what the list reports (and hashes the same).
_LIST_QUIRK = "items.status.operationState.operation.sync"
DEFAULT_WATCH_FIELDS: tuple[str, ...] = (
    "result.type",
    *(
        "result.application." + f.removeprefix("items.")
        for f in DEFAULT_LIST_FIELDS
        if f.startswith("items.") and f != _LIST_QUIRK
    ),
    "result.application.status.operationState.syncResult.revision",
    "result.application.status.operationState.syncResult.revisions",
)

SYNC_STATUSES = frozenset({"Synced", "OutOfSync", "Unknown"})
HEALTH_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
OPERATION_PHASES = frozenset({"Running", "Terminating", "Succeeded", "Failed", "Error"})
WATCH_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})
WINDOW_KINDS = frozenset({"allow", "deny"})

# A watch stream gets a keep-alive line every 15 s, so a read this long without bytes means it died.
WATCH_TIMEOUT: Timeout = (3.05, 60)


# ---------------------------------------------------------------------------------------------
# Exceptions


class ArgoCDError(Exception):
    """Base class for Argo CD failures; carries the HTTP status and gRPC code when known."""

    def __init__(self, message: str, *, status: int | None = None, grpc_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code


class ArgoCDUnavailable(ArgoCDError):
    """Transient: connection error, timeout, 5xx or 429. Retry later."""


class ArgoCDAuthError(ArgoCDError):
    """401: missing, expired or invalid token."""


class ArgoCDPermissionDenied(ArgoCDError):
    """403: RBAC denies it, a sync window blocks it, or the app is not visible."""


class ArgoCDNotFound(ArgoCDError):
    """404: the object does not exist (only reported when a project is given, see API.md §3)."""


class ArgoCDRequestError(ArgoCDError):
    """400/409/415: invalid argument or failed precondition (e.g. an operation already running)."""


class ArgoCDResponseError(ArgoCDError):
    """The server answered with something we cannot parse into the expected shape."""


# ---------------------------------------------------------------------------------------------
# Dataclasses

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


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_source(r: JsonReader) -> AppSource:
    return AppSource(
        repo_url=r.text("repoURL"),
        path=r.opt_text("path"),
        target_revision=r.opt_text("targetRevision"),
        chart=r.opt_text("chart"),
        ref=r.opt_text("ref"),
    )


def _parse_history(r: JsonReader) -> HistoryEntry:
    initiator = r.obj("initiatedBy")
    source = r.opt_obj("source")
    sources = r.objs("sources")
    first = source or (sources[0] if sources else None)
    return HistoryEntry(
        id=r.req_integer("id"),
        revision=r.opt_text("revision"),
        revisions=r.strs("revisions"),
        deployed_at=r.time("deployedAt"),
        deploy_started_at=r.time("deployStartedAt"),
        initiated_by_username=initiator.opt_text("username"),
        initiated_by_automated=initiator.flag("automated"),
        source_path=first.opt_text("path") if first else None,
        repo_url=first.opt_text("repoURL") if first else None,
    )


def _parse_condition(r: JsonReader) -> Condition:
    return Condition(
        type=r.text("type"), message=r.text("message"), last_transition_time=r.time("lastTransitionTime")
    )


def _parse_sources(spec: JsonReader) -> tuple[tuple[AppSource, ...], bool]:
    multi = spec.objs("sources")
    if multi:
        return tuple(_parse_source(s) for s in multi), True
    single = spec.opt_obj("source")
    return ((_parse_source(single),) if single else ()), False


def parse_application(data: Any, path: str = "$") -> ArgoApplication:
    """Parse an Application object; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    sources, is_multi = _parse_sources(spec)
    dest, sync, health = spec.obj("destination"), status.obj("sync"), status.obj("health")
    op_state = status.obj("operationState")
    operation = op_state.obj("operation")
    initiator = operation.obj("initiatedBy")
    # With `fields=...operationState.operation.sync` the list returns the sync *result* there (§5),
    # so accept revisions from either place.
    result = op_state.opt_obj("syncResult") or operation.obj("sync")
    return ArgoApplication(
        name=meta.req_text("name"),
        namespace=meta.opt_text("namespace"),
        project=spec.text("project"),
        labels=meta.str_map("labels"),
        annotations=meta.str_map("annotations"),
        sources=sources,
        is_multi_source=is_multi,
        destination_server=dest.opt_text("server"),
        destination_name=dest.opt_text("name"),
        destination_namespace=dest.opt_text("namespace"),
        automated=spec.obj("syncPolicy").has("automated"),
        sync_status=sync.enum("status", SYNC_STATUSES),
        sync_revision=sync.opt_text("revision"),
        sync_revisions=sync.strs("revisions"),
        health_status=health.enum("status", HEALTH_STATUSES),
        health_message=health.opt_text("message"),
        operation_phase=op_state.enum("phase", OPERATION_PHASES),
        operation_message=op_state.opt_text("message"),
        operation_started_at=op_state.time("startedAt"),
        operation_finished_at=op_state.time("finishedAt"),
        operation_initiated_by=initiator.opt_text("username"),
        operation_initiated_automated=initiator.flag("automated"),
        operation_pending=r.has("operation"),
        sync_result_revision=result.opt_text("revision"),
        sync_result_revisions=result.strs("revisions"),
        images=status.obj("summary").strs("images"),
        reconciled_at=status.time("reconciledAt"),
        history=tuple(_parse_history(h) for h in status.objs("history")),
        conditions=tuple(_parse_condition(c) for c in status.objs("conditions")),
        resource_version=meta.opt_text("resourceVersion"),
        sync_result_resource_counts=_resource_counts(result),
    )


def _resource_counts(result: JsonReader) -> tuple[tuple[str, int], ...]:
    counts = Counter(item.text("status") or "Unknown" for item in result.objs("resources"))
    return tuple(sorted(counts.items()))


def parse_application_list(data: Any) -> ApplicationList:
    """Parse an ApplicationList."""
    r = JsonReader(data)
    items = tuple(parse_application(item.raw_dict(), item.path) for item in r.objs("items"))
    return ApplicationList(items=items, resource_version=r.obj("metadata").opt_text("resourceVersion"))


def _parse_window(r: JsonReader) -> SyncWindow:
    return SyncWindow(
        kind=r.enum("kind", WINDOW_KINDS) or "",
        schedule=r.text("schedule"),
        duration=r.text("duration"),
        applications=r.strs("applications"),
        namespaces=r.strs("namespaces"),
        clusters=r.strs("clusters"),
        manual_sync=r.flag("manualSync"),
        time_zone=r.opt_text("timeZone"),
        description=r.opt_text("description"),
    )


def parse_project(data: Any, path: str = "$") -> ArgoProject:
    """Parse an AppProject."""
    r = JsonReader(data, path)
    windows = r.obj("spec").objs("syncWindows")
    return ArgoProject(
        name=r.req_obj("metadata").req_text("name"), sync_windows=tuple(map(_parse_window, windows))
    )


def parse_cluster(data: Any, path: str = "$") -> ArgoCluster:
    """Parse a Cluster; prefer info.connectionState over the deprecated top-level copy."""
    r = JsonReader(data, path)
    state = r.obj("info").opt_obj("connectionState") or r.obj("connectionState")
    return ArgoCluster(
        server=r.req_text("server"),
        name=r.text("name"),
        labels=r.str_map("labels"),
        connection_status=state.opt_text("status"),
    )


def _decode_state(r: JsonReader, key: str) -> dict[str, Any] | None:
    # managed-resources carries manifests as JSON *strings*; "null" or "" means absent.
    raw = r.opt_text(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        r.fail(key, "not valid JSON")
    if value is None:
        return None
    if not isinstance(value, dict):
        r.fail(key, "expected a JSON object")
    return value


def parse_resource_diff(r: JsonReader) -> ResourceDiff:
    """Parse one managed-resources item."""
    return ResourceDiff(
        group=r.text("group"),
        kind=r.text("kind"),
        namespace=r.text("namespace"),
        name=r.text("name"),
        modified=r.flag("modified"),
        target_state=_decode_state(r, "targetState"),
        live_state=_decode_state(r, "liveState"),
        diff=r.text("diff"),
    )


def _parse_node(r: JsonReader) -> ResourceNode:
    return ResourceNode(
        group=r.text("group"),
        version=r.text("version"),
        kind=r.text("kind"),
        namespace=r.text("namespace"),
        name=r.text("name"),
        uid=r.text("uid"),
        health_status=r.obj("health").opt_text("status"),
        images=r.strs("images"),
        parent_uids=tuple(p.text("uid") for p in r.objs("parentRefs")),
    )


def _parse_watch_payload(data: Any) -> WatchEvent:
    r = JsonReader(data)
    if r.has("error"):
        raise _stream_error(r.req_obj("error"))
    result = r.req_obj("result")
    event_type = result.enum("type", WATCH_TYPES)
    if event_type is None:
        result.fail("type", "missing")
    app = result.req_obj("application")
    return WatchEvent(type=event_type, application=parse_application(app.raw_dict(), app.path))


def _stream_error(r: JsonReader) -> ArgoCDError:
    status = r.integer("http_code")
    return _error_for(status or 500, r.text("message") or r.text("http_status"), r.integer("grpc_code"))


# ---------------------------------------------------------------------------------------------
# Error mapping


def _error_for(status: int, message: str, grpc_code: int | None) -> ArgoCDError:
    text = f"Argo CD answered {status}: {message[:300]}" if message else f"Argo CD answered {status}"
    cls: type[ArgoCDError]
    if status == 401:
        cls = ArgoCDAuthError
    elif status == 403:
        cls = ArgoCDPermissionDenied
    elif status == 404:
        cls = ArgoCDNotFound
    elif status == 429 or status >= 500:
        cls = ArgoCDUnavailable
    elif 300 <= status < 400:
        cls = ArgoCDResponseError
        text = f"Argo CD answered with a redirect ({status}); check the base URL"
    else:
        cls = ArgoCDRequestError
    return cls(text, status=status, grpc_code=grpc_code)


def _raise_for_status(resp: HttpResponse, scrub: Callable[[str], str] = str) -> None:
    if resp.status < 300:
        return
    message, grpc_code = "", None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_message = body.get("message") or body.get("error")
        message = raw_message if isinstance(raw_message, str) else ""
        grpc_code = body.get("code") if isinstance(body.get("code"), int) else None
    elif resp.status < 500:
        message = resp.text(300).strip()  # e.g. plain-text "415 Invalid content type"
    # The body was scrubbed as bytes already; this catches credentials spelled with JSON escapes.
    raise _error_for(resp.status, scrub(message), grpc_code)


# ---------------------------------------------------------------------------------------------
# Client


class ArgoCDClient:
    """Read and sync Argo CD applications over its REST API."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        verify_tls: bool | str = True,
        timeout: Timeout = DEFAULT_TIMEOUT,
        allow_http: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        try:
            self._http = HttpClient(
                base_url,
                auth_headers={"Authorization": Secret(f"Bearer {token}")},
                default_headers={"Accept": "application/json"},
                allow_http=allow_http,
                verify_tls=verify_tls,
                timeout=timeout,
                session=session,
            )
        except UnsafeURL as exc:
            raise ArgoCDError(f"refusing Argo CD URL: {exc}") from None

    def __repr__(self) -> str:
        return f"ArgoCDClient({self._http.base_url!r})"

    @property
    def base_url(self) -> str:
        """Return the validated base URL."""
        return self._http.base_url

    # -- transport ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, path, params=params, json_body=body)
        except ResponseTooLarge as exc:
            raise ArgoCDResponseError(str(exc)) from None
        except TransportError as exc:
            raise ArgoCDUnavailable(str(exc)) from None
        except HttpError as exc:
            raise ArgoCDError(str(exc)) from None
        _raise_for_status(resp, self._http.scrub)
        try:
            return resp.json()
        except ValueError:
            raise ArgoCDResponseError(f"{method} {path}: body is not valid JSON (truncated?)") from None

    def _parse(self, what: str, parser: Any, data: Any) -> Any:
        try:
            return parser(data)
        except ParseError as exc:
            raise ArgoCDResponseError(self._http.scrub(f"malformed {what}: {exc}")) from None

    @staticmethod
    def _app_path(name: str, suffix: str = "") -> str:
        return f"/api/v1/applications/{quote(name, safe='')}{suffix}"

    # -- reads ----------------------------------------------------------------------------------

    def version(self) -> ArgoVersion:
        """Return the server version (PascalCase keys, see API.md §2)."""
        # Reference: swagger.json paths./api/version.get (versionVersionMessage)
        data = self._call("GET", "/api/version")

        def parse(d: Any) -> ArgoVersion:
            r = JsonReader(d)
            return ArgoVersion(r.req_text("Version"), r.opt_text("BuildDate"), r.opt_text("GitCommit"))

        result: ArgoVersion = self._parse("version", parse, data)
        return result

    def list_applications(
        self,
        *,
        projects: Iterable[str] = (),
        selector: str | None = None,
        fields: Iterable[str] | None = DEFAULT_LIST_FIELDS,
    ) -> ApplicationList:
        """List applications, by default with the poller's narrow `fields` set."""
        params: list[tuple[str, str]] = [("projects", p) for p in projects]
        if selector:
            params.append(("selector", selector))
        if fields:
            params.append(("fields", ",".join(fields)))
        # Reference: swagger.json paths./api/v1/applications.get (v1alpha1ApplicationList)
        data = self._call("GET", "/api/v1/applications", params=params)
        result: ApplicationList = self._parse("application list", parse_application_list, data)
        return result

    def get_application(self, name: str, *, project: str | None = None) -> ArgoApplication:
        """Return one application in full, including history and conditions."""
        params = {"project": project} if project else None
        # Reference: swagger.json paths./api/v1/applications/{name}.get (v1alpha1Application)
        data = self._call("GET", self._app_path(name), params=params)
        result: ArgoApplication = self._parse(f"application {name!r}", parse_application, data)
        return result

    def revision_metadata(
        self, name: str, revision: str, *, source_index: int | None = None, version_id: int | None = None
    ) -> RevisionMetadata:
        """Return the Git commit metadata Argo CD knows for a revision of an app."""
        params: dict[str, Any] = {}
        if source_index is not None:
            params["sourceIndex"] = source_index
        if version_id is not None:
            params["versionId"] = version_id
        path = self._app_path(name, f"/revisions/{quote(revision, safe='')}/metadata")
        # Reference: swagger.json paths./api/v1/applications/{name}/revisions/{revision}/metadata.get
        data = self._call("GET", path, params=params or None)

        def parse(d: Any) -> RevisionMetadata:
            r = JsonReader(d)
            return RevisionMetadata(r.text("author"), r.time("date"), r.text("message"), r.strs("tags"))

        result: RevisionMetadata = self._parse("revision metadata", parse, data)
        return result

    def managed_resources(self, name: str) -> tuple[ResourceDiff, ...]:
        """Return the managed resources of an app with target/live state decoded."""
        # Reference: swagger.json paths./api/v1/applications/{applicationName}/managed-resources.get
        data = self._call("GET", self._app_path(name, "/managed-resources"))
        result: tuple[ResourceDiff, ...] = self._parse(
            "managed resources", lambda d: tuple(map(parse_resource_diff, JsonReader(d).objs("items"))), data
        )
        return result

    def resource_tree(self, name: str) -> ResourceTree:
        """Return the resource tree (nodes and orphaned nodes) of an app."""
        # Reference: swagger.json paths./api/v1/applications/{applicationName}/resource-tree.get
        data = self._call("GET", self._app_path(name, "/resource-tree"))

        def parse(d: Any) -> ResourceTree:
            r = JsonReader(d)
            return ResourceTree(
                tuple(map(_parse_node, r.objs("nodes"))), tuple(map(_parse_node, r.objs("orphanedNodes")))
            )

        result: ResourceTree = self._parse("resource tree", parse, data)
        return result

    def application_sync_windows(self, name: str) -> SyncWindowsState:
        """Return the sync windows assigned to and active for an app, and whether it can sync now."""
        # Reference: swagger.json paths./api/v1/applications/{name}/syncwindows.get
        data = self._call("GET", self._app_path(name, "/syncwindows"))

        def parse(d: Any) -> SyncWindowsState:
            r = JsonReader(d)
            return SyncWindowsState(
                assigned=tuple(map(_parse_window, r.objs("assignedWindows"))),
                active=tuple(map(_parse_window, r.objs("activeWindows"))),
                can_sync=r.flag("canSync"),
            )

        result: SyncWindowsState = self._parse("sync windows", parse, data)
        return result

    def list_projects(self) -> tuple[ArgoProject, ...]:
        """Return all visible AppProjects."""
        # Reference: swagger.json paths./api/v1/projects.get (v1alpha1AppProjectList)
        data = self._call("GET", "/api/v1/projects")
        result: tuple[ArgoProject, ...] = self._parse(
            "project list",
            lambda d: tuple(parse_project(i.raw_dict(), i.path) for i in JsonReader(d).objs("items")),
            data,
        )
        return result

    def get_project(self, name: str) -> ArgoProject:
        """Return one AppProject."""
        # Reference: swagger.json paths./api/v1/projects/{name}.get (v1alpha1AppProject)
        data = self._call("GET", f"/api/v1/projects/{quote(name, safe='')}")
        result: ArgoProject = self._parse(f"project {name!r}", parse_project, data)
        return result

    def list_clusters(self) -> tuple[ArgoCluster, ...]:
        """Return all clusters; filter on labels yourself (no server-side selector)."""
        # Reference: swagger.json paths./api/v1/clusters.get (v1alpha1ClusterList)
        data = self._call("GET", "/api/v1/clusters")
        result: tuple[ArgoCluster, ...] = self._parse(
            "cluster list",
            lambda d: tuple(parse_cluster(i.raw_dict(), i.path) for i in JsonReader(d).objs("items")),
            data,
        )
        return result

    # -- writes ---------------------------------------------------------------------------------

    def sync(
        self,
        name: str,
        *,
        revision: str | None = None,
        dry_run: bool = False,
        prune: bool = False,
        project: str | None = None,
    ) -> ArgoApplication:
        """Request a sync; return the app with its pending operation."""
        body: dict[str, Any] = {"name": name, "dryRun": dry_run, "prune": prune}
        if revision:
            body["revision"] = revision
        if project:
            body["project"] = project
        # Reference: swagger.json paths./api/v1/applications/{name}/sync.post (applicationApplicationSyncRequest)
        data = self._call("POST", self._app_path(name, "/sync"), body=body)
        result: ArgoApplication = self._parse(f"sync answer for {name!r}", parse_application, data)
        return result

    # -- watch ----------------------------------------------------------------------------------

    def watch_applications(
        self,
        *,
        resource_version: str | None = None,
        projects: Iterable[str] = (),
        selector: str | None = None,
        fields: Iterable[str] | None = None,
        timeout: Timeout = WATCH_TIMEOUT,
    ) -> Iterator[WatchEvent]:
        """Yield WatchEvents from the application stream until the server closes it.

        Raises the mapped ArgoCDError for an in-stream error object; a read timeout or cut
        connection surfaces as ArgoCDUnavailable, after which the caller re-lists.
        """
        params: list[tuple[str, str]] = [("projects", p) for p in projects]
        if resource_version:
            params.append(("resourceVersion", resource_version))
        if selector:
            params.append(("selector", selector))
        if fields:
            params.append(("fields", ",".join(fields)))
        headers = {"Accept": "text/event-stream"}
        try:
            # Reference: swagger.json paths./api/v1/stream/applications.get (streamresult of v1alpha1ApplicationWatchEvent)
            with self._http.stream_lines(
                "/api/v1/stream/applications", params=params, headers=headers, timeout=timeout
            ) as (head, lines):
                _raise_for_status(head, self._http.scrub)
                for payload in iter_stream_payloads(lines):
                    yield self._parse_event(payload)
        except ResponseTooLarge as exc:
            raise ArgoCDResponseError(str(exc)) from None
        except TransportError as exc:
            raise ArgoCDUnavailable(str(exc)) from None
        except HttpError as exc:
            raise ArgoCDError(str(exc)) from None

    def _parse_event(self, payload: bytes) -> WatchEvent:
        try:
            data = json.loads(payload)
        except ValueError:
            raise ArgoCDResponseError("watch stream: event is not valid JSON") from None
        try:
            result: WatchEvent = self._parse("watch event", _parse_watch_payload, data)
        except ArgoCDError as exc:
            if exc.status is None:
                raise
            # An in-stream error object: its message came from the server.
            raise type(exc)(self._http.scrub(str(exc)), status=exc.status, grpc_code=exc.grpc_code) from None
        return result

    def close(self) -> None:
        """Abort an open watch stream (from another thread) and release the connection pool."""
        self._http.close()

    # -- auth -----------------------------------------------------------------------------------

    @classmethod
    def session_login(
        cls,
        base_url: str,
        username: str,
        password: str,
        *,
        verify_tls: bool | str = True,
        allow_http: bool = False,
        session: requests.Session | None = None,
    ) -> str:
        """Exchange a username and password for a session token."""
        return session_login(
            base_url, username, password, verify_tls=verify_tls, allow_http=allow_http, session=session
        )

    # -- Argo Rollouts and ApplicationSets (shapes in integrations/argocd_resources.py) -----------

    def rollout(self, name: str, *, namespace: str, resource_name: str) -> Rollout:
        """Return the live Argo Rollouts `Rollout` of an app, read through Argo CD's resource endpoint."""
        params = {
            "group": ROLLOUT_GROUP,
            "kind": ROLLOUT_KIND,
            "version": ROLLOUT_VERSION,
            "namespace": namespace,
            "resourceName": resource_name,
        }
        # Reference: swagger.json paths./api/v1/applications/{name}/resource.get
        #   (applicationApplicationResourceResponse: the live object as a JSON string in `manifest`)
        data = self._call("GET", self._app_path(name, "/resource"), params=params)
        result: Rollout = self._parse(
            f"rollout {resource_name!r}", lambda d: parse_rollout(parse_resource_manifest(d)), data
        )
        return result

    def list_application_sets(self) -> tuple[ApplicationSet, ...]:
        """List the ApplicationSets the token may see, with generators, strategy and status."""
        # Reference: swagger.json paths./api/v1/applicationsets.get (v1alpha1ApplicationSetList)
        data = self._call("GET", "/api/v1/applicationsets")
        result: tuple[ApplicationSet, ...] = self._parse(
            "applicationset list", parse_application_set_list, data
        )
        return result

    def application_owner_set(self, name: str) -> tuple[str, str] | None:
        """Return `(name, uid)` of the ApplicationSet that generated an app (its ownerReferences)."""
        # Reference: swagger.json paths./api/v1/applications/{name}.get (metadata.ownerReferences)
        data = self._call("GET", self._app_path(name))
        result: tuple[str, str] | None = self._parse(f"application {name!r}", owner_application_set, data)
        return result


def iter_stream_payloads(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Turn SSE (`data: {...} ` + blank line) or NDJSON lines into JSON payloads."""
    data: list[bytes] = []
    for raw in lines:
        # Argo CD writes "data: {...} \n": strip the trailing space as well as CR.
        line = raw.rstrip()
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b":"):
            continue  # SSE comment / keep-alive
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith((b"{", b"[")):
            yield line  # NDJSON
        # other SSE fields (event:, id:, retry:) carry nothing we need
    # Per the SSE spec an event without its terminating blank line is incomplete: drop it.


def session_login(
    base_url: str,
    username: str,
    password: str,
    *,
    verify_tls: bool | str = True,
    allow_http: bool = False,
    session: requests.Session | None = None,
) -> str:
    """Exchange a username and password for a session token (POST /api/v1/session)."""
    try:
        http = HttpClient(base_url, allow_http=allow_http, verify_tls=verify_tls, session=session)
        # Reference: swagger.json paths./api/v1/session.post (sessionSessionCreateRequest)
        resp = http.request("POST", "/api/v1/session", json_body={"username": username, "password": password})
    except TransportError as exc:
        raise ArgoCDUnavailable(str(exc)) from None
    except HttpError as exc:
        raise ArgoCDError(str(exc)) from None
    _raise_for_status(resp)
    try:
        token = JsonReader(resp.json()).req_text("token")
    except (ValueError, ParseError):
        raise ArgoCDResponseError("session answer has no token") from None
    return token
