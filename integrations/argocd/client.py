"""The Argo CD REST client: one HttpClient, typed answers, domain exceptions."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import quote

import requests

from integrations.argocd.errors import (
    ArgoCDError,
    ArgoCDResponseError,
    ArgoCDUnavailable,
    RenderError,
    raise_for_status,
    render_error_from,
)
from integrations.argocd.fields import DEFAULT_LIST_FIELDS, FULL_WATCH_FIELDS
from integrations.argocd.listtexts import ApplicationListTexts, split_application_list
from integrations.argocd.manifests import ManifestSet, parse_manifest_response
from integrations.argocd.models import (
    ApplicationList,
    ArgoApplication,
    ArgoCluster,
    ArgoProject,
    ArgoVersion,
    InitialReadChunk,
    RawApplicationList,
    ResourceDiff,
    ResourceTree,
    RevisionMetadata,
    SyncWindowsState,
    WatchEvent,
)
from integrations.argocd.parse import (
    parse_application,
    parse_application_list,
    parse_cluster,
    parse_project,
    parse_raw_application_list,
    parse_resource_diff,
    parse_resource_node,
    parse_sync_window,
)
from integrations.argocd.resources import (
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
from integrations.argocd.watch import WATCH_TIMEOUT, InitialBurst, iter_stream_payloads, parse_watch_payload
from integrations.http import (
    DEFAULT_TIMEOUT,
    HttpClient,
    HttpError,
    JsonReader,
    ParseError,
    ResponseTooLarge,
    Secret,
    Timeout,
    TransportError,
    UnsafeURL,
)

DOCS = "https://argo-cd.readthedocs.io/en/stable/developer-guide/api-docs/"


@contextmanager
def _argocd_errors() -> Iterator[None]:
    """Map the HTTP layer's failures to the client's typed errors (one place for every call)."""
    try:
        yield
    except ResponseTooLarge as exc:
        raise ArgoCDResponseError(str(exc)) from None
    except TransportError as exc:
        raise ArgoCDUnavailable(str(exc)) from None
    except HttpError as exc:
        raise ArgoCDError(str(exc)) from None


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
        with _argocd_errors():
            resp = self._http.request(method, path, params=params, json_body=body)
        raise_for_status(resp, self._http.scrub)
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

    def list_application_items(
        self,
        *,
        projects: Iterable[str] = (),
        selector: str | None = None,
        fields: Iterable[str] | None = DEFAULT_LIST_FIELDS,
    ) -> RawApplicationList:
        """List applications like `list_applications`, items left raw: parse each with `parse_list_item`.

        A poller that hashes the raw items first only pays for parsing the ones that changed.
        """
        params: list[tuple[str, str]] = [("projects", p) for p in projects]
        if selector:
            params.append(("selector", selector))
        if fields:
            params.append(("fields", ",".join(fields)))
        data = self._call("GET", "/api/v1/applications", params=params)
        result: RawApplicationList = self._parse("application list", parse_raw_application_list, data)
        return result

    def list_application_texts(
        self,
        *,
        projects: Iterable[str] = (),
        selector: str | None = None,
        fields: Iterable[str] | None = DEFAULT_LIST_FIELDS,
    ) -> ApplicationListTexts:
        """List applications like `list_applications`, each item left as its JSON text.

        A poller that knows the hash of each app's last item text decodes only the items it does
        not recognise (`decoded`, then `parse_list_item`); see integrations/argocd/listtexts.py.
        """
        params: list[tuple[str, str]] = [("projects", p) for p in projects]
        if selector:
            params.append(("selector", selector))
        if fields:
            params.append(("fields", ",".join(fields)))
        with _argocd_errors():
            resp = self._http.request("GET", "/api/v1/applications", params=params)
        raise_for_status(resp, self._http.scrub)
        return self._list_texts(lambda: split_application_list(resp.body))

    def list_texts_redecoded(self, listing: ApplicationListTexts) -> ApplicationListTexts:
        """Decode a listing whole (when `decoded` found an item text that is not a complete object)."""
        return self._list_texts(listing.redecoded)

    def _list_texts(self, build: Any) -> ApplicationListTexts:
        try:
            result: ApplicationListTexts = build()
        except ParseError as exc:
            raise ArgoCDResponseError(self._http.scrub(f"malformed application list: {exc}")) from None
        except ValueError:
            raise ArgoCDResponseError(
                "GET /api/v1/applications: body is not valid JSON (truncated?)"
            ) from None
        return result

    def parse_list_item(self, item: dict[str, Any], index: int) -> ArgoApplication:
        """Parse one raw item of `list_application_items` (ArgoCDResponseError when malformed)."""
        result: ArgoApplication = self._parse(
            "application list", lambda d: parse_application(d, f"$.items[{index}]"), item
        )
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
                tuple(map(parse_resource_node, r.objs("nodes"))),
                tuple(map(parse_resource_node, r.objs("orphanedNodes"))),
            )

        result: ResourceTree = self._parse("resource tree", parse, data)
        return result

    def manifests(
        self,
        name: str,
        *,
        revision: str | None = None,
        revisions: Iterable[str] = (),
        source_positions: Iterable[int] = (),
        app_namespace: str | None = None,
        project: str | None = None,
    ) -> ManifestSet:
        """Return the objects Argo CD renders for an app at a revision; RenderError when it cannot.

        Single-source apps take `revision`; multi-source apps take `revisions` with the 1-based
        `source_positions` they apply to (sources not named render at their target revision).
        Every failure, from a manifest-generation error to a timeout, is a RenderError carrying
        Argo CD's message (`transient` when a later try may succeed).
        """
        revisions, positions = list(revisions), list(source_positions)
        if len(revisions) != len(positions):
            raise ValueError("revisions and source_positions must have the same length")
        params: list[tuple[str, str]] = []
        if revision:
            params.append(("revision", revision))
        for rev, pos in zip(revisions, positions, strict=True):
            params += [("revisions", rev), ("sourcePositions", str(int(pos)))]
        if app_namespace:
            params.append(("appNamespace", app_namespace))
        if project:
            params.append(("project", project))
        try:
            # Reference: swagger.json paths./api/v1/applications/{name}/manifests.get (repositoryManifestResponse)
            data = self._call("GET", self._app_path(name, "/manifests"), params=params or None)
            result: ManifestSet = self._parse(f"manifests of {name!r}", parse_manifest_response, data)
        except RenderError:
            raise
        except ArgoCDError as exc:
            raise render_error_from(exc) from None
        return result

    def application_sync_windows(self, name: str) -> SyncWindowsState:
        """Return the sync windows assigned to and active for an app, and whether it can sync now."""
        # Reference: swagger.json paths./api/v1/applications/{name}/syncwindows.get
        data = self._call("GET", self._app_path(name, "/syncwindows"))

        def parse(d: Any) -> SyncWindowsState:
            r = JsonReader(d)
            return SyncWindowsState(
                assigned=tuple(map(parse_sync_window, r.objs("assignedWindows"))),
                active=tuple(map(parse_sync_window, r.objs("activeWindows"))),
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
        sync_options: Iterable[str] = (),
        app_namespace: str | None = None,
    ) -> ArgoApplication:
        """Request a sync (to `revision`, with `sync_options` such as ``ApplyOutOfSyncOnly=true``);
        return the app with its pending operation.

        Argo CD refuses with 403 ``cannot sync: blocked by sync window`` inside a deny window (unless
        it allows manual syncs) and with 400 ``another operation is already in progress``.
        """
        body: dict[str, Any] = {"name": name, "dryRun": dry_run, "prune": prune}
        if revision:
            body["revision"] = revision
        if project:
            body["project"] = project
        if app_namespace:
            body["appNamespace"] = app_namespace
        options = list(sync_options)
        if options:
            body["syncOptions"] = {"items": options}  # applicationSyncOptions
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
        payloads = self.watch_application_payloads(
            resource_version=resource_version,
            projects=projects,
            selector=selector,
            fields=fields,
            timeout=timeout,
        )
        for data in payloads:
            yield self.parse_watch_event(data)

    def watch_application_payloads(
        self,
        *,
        resource_version: str | None = None,
        projects: Iterable[str] = (),
        selector: str | None = None,
        fields: Iterable[str] | None = None,
        timeout: Timeout = WATCH_TIMEOUT,
    ) -> Iterator[dict[str, Any]]:
        """Like `watch_applications`, but yield each event decoded and not yet parsed.

        A reader that coalesces bursts parses (`parse_watch_event`) only the events it stores.
        In-stream error objects and undecodable events raise here, as in `watch_applications`.
        """
        params: list[tuple[str, str]] = [("projects", p) for p in projects]
        if resource_version:
            params.append(("resourceVersion", resource_version))
        if selector:
            params.append(("selector", selector))
        if fields:
            params.append(("fields", ",".join(fields)))
        headers = {"Accept": "text/event-stream"}
        # Reference: swagger.json paths./api/v1/stream/applications.get (streamresult of v1alpha1ApplicationWatchEvent)
        with (
            _argocd_errors(),
            self._http.stream_lines(
                "/api/v1/stream/applications", params=params, headers=headers, timeout=timeout
            ) as (head, lines),
        ):
            raise_for_status(head, self._http.scrub)
            for payload in iter_stream_payloads(lines):
                yield self._decode_event(payload)

    def initial_applications(
        self,
        expected: Iterable[str],
        *,
        chunk: int = 500,
        budget_seconds: float = 300.0,
        fields: Iterable[str] = FULL_WATCH_FIELDS,
        timeout: Timeout = WATCH_TIMEOUT,
    ) -> Iterator[InitialReadChunk]:
        """Read the `expected` apps in full from one stream's initial burst, `chunk` apps at a time.

        Instead of a GET per app: the stream opened without resourceVersion first sends one ADDED
        per app, sorted by name, and its `fields` may ask for history (API.md §5-§6). The stream is
        closed once the burst has delivered (or gone past) every expected name, or has been quiet for
        a keep-alive period (SSE; NDJSON has no keep-alives: the read timeout). A stream error, a cut
        connection, a read timeout or the time budget ends the read early: the last chunk (`final`)
        names the apps still `missing`, for the caller to GET (so does a malformed event: the GET
        then says what is wrong). Unfiltered, like the poller's list the expectation comes from.
        """
        burst = InitialBurst(expected)
        deadline = time.monotonic() + budget_seconds
        apps: dict[str, ArgoApplication] = {}
        failure = ""
        if not burst.done:
            events = self._initial_events(fields, timeout)
            quiet = 0  # keep-alives in a row: Argo CD sends one every 15 s, the burst back to back
            try:
                for data in events:
                    quiet = quiet + 1 if data is None else 0
                    if quiet >= 2:
                        # A whole keep-alive period without an event: the burst is over (an
                        # expected app sorted last was deleted meanwhile, or is not visible).
                        break
                    if data is not None:
                        kind, name = self._event_head(data)
                        if burst.offer(kind, name):
                            apps[name] = self.parse_watch_event(data).application
                        elif kind == "DELETED":
                            apps.pop(name, None)
                        if len(apps) >= chunk:
                            yield InitialReadChunk(apps)
                            apps = {}
                    if burst.done:
                        break
                    if time.monotonic() > deadline:
                        failure = f"initial burst: not complete after {budget_seconds:g} s"
                        break
                else:
                    failure = "initial burst: the stream ended early"
            except (ArgoCDUnavailable, ArgoCDResponseError) as exc:
                failure = str(exc) or exc.__class__.__name__
            except ArgoCDError as exc:
                if exc.status is None:
                    raise
                failure = str(exc)  # an in-stream error object: the rest is read one by one
            finally:
                events.close()
        yield InitialReadChunk(apps, final=True, missing=burst.missing(), failure=failure)

    def _initial_events(self, fields: Iterable[str], timeout: Timeout) -> Generator[dict[str, Any] | None]:
        """Decoded events of a stream from its initial burst on; None for each keep-alive."""
        params = [("fields", ",".join(fields))] if fields else []
        with (
            _argocd_errors(),
            self._http.stream_lines(
                "/api/v1/stream/applications",
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as (head, lines),
        ):
            raise_for_status(head, self._http.scrub)
            for payload in iter_stream_payloads(lines, keepalives=True):
                yield self._decode_event(payload) if payload else None

    def _event_head(self, data: dict[str, Any]) -> tuple[str, str]:
        """An event's type and app name, read before (and without) parsing the whole app."""
        result = data.get("result")
        app = result.get("application") if isinstance(result, dict) else None
        meta = app.get("metadata") if isinstance(app, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        kind = result.get("type") if isinstance(result, dict) else None
        if not isinstance(name, str) or not isinstance(kind, str):
            self.parse_watch_event(data)  # raises, saying what is wrong
            raise ArgoCDResponseError("watch stream: event without a type or app name")
        return kind, name

    def _decode_event(self, payload: bytes) -> dict[str, Any]:
        try:
            data = json.loads(payload)
        except ValueError:
            raise ArgoCDResponseError("watch stream: event is not valid JSON") from None
        if not isinstance(data, dict) or "error" in data:
            self.parse_watch_event(data)  # raises the (scrubbed) in-stream error, or says what is wrong
        return cast(dict[str, Any], data)

    def parse_watch_event(self, data: Any) -> WatchEvent:
        """Parse one decoded stream event (from `watch_application_payloads`)."""
        try:
            result: WatchEvent = self._parse("watch event", parse_watch_payload, data)
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

    # -- Argo Rollouts and ApplicationSets (shapes in integrations/argocd/resources.py) -----------

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
    raise_for_status(resp)
    try:
        token = JsonReader(resp.json()).req_text("token")
    except (ValueError, ParseError):
        raise ArgoCDResponseError("session answer has no token") from None
    return token
