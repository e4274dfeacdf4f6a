"""HTTP front of the emulator: the Argo CD REST API subset of /work/shared/argocd/API.md, plus the
``/sandbox/`` admin endpoints. stdlib only, so it starts fast and runs outside Django."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import select
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from core.gcscope import bulk_call
from sandbox.argocd import appsets, resources
from sandbox.argocd.emulator import PERMISSION_DENIED, ApiError, not_visible
from sandbox.argocd.model import AppState, ts
from sandbox.argocd.query import (
    FieldSelection,
    SelectorError,
    compile_paths,
    normalize_repo_url,
    parse_selector,
    project_mask,
    selector_matches,
)
from sandbox.argocd.render import RenderError, hide_secret_data
from sandbox.argocd.windows import app_window_view, can_sync, closing_window, validate_window

if TYPE_CHECKING:
    from sandbox.argocd.emulator import ArgoCDEmulator

GRPC_TO_HTTP = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}
HTTP_TO_GRPC = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 10,
    429: 8,
    499: 1,
    500: 2,
    501: 12,
    502: 14,
    503: 14,
    504: 4,
}
VERSION = {
    "Version": "v3.5.1+37ee009",
    "BuildDate": "2026-08-22T22:31:32Z",
    "GitCommit": "37ee0097cf851bc2dd7665fc081bbce61a7e836e",
    "GitTag": "v3.5.1",
    "GitTreeState": "clean",
    "GoVersion": "go1.24.6",
    "Compiler": "gc",
    "Platform": "linux/amd64",
    "KustomizeVersion": "v5.7.1 2025-07-01T00:00:00Z",
    "HelmVersion": "v3.18.4+gd80839c",
    "KubectlVersion": "v0.33.1",
    "JsonnetVersion": "v0.21.0",
}
SESSION_TTL = 24 * 3600


# Stream events written at once at most, and the longest an event waits for others (stream_apps).
STREAM_EVENTS_PER_WRITE = 32
STREAM_WRITE_DELAY = 0.002


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: ArgoCDEmulator


def make_server(emulator: ArgoCDEmulator) -> _Server:
    server = _Server((emulator.host, emulator.port), Handler)
    server.emulator = emulator
    return server


# ---- tokens: HS256 JWTs like Argo CD's, signed with a per-process secret -------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_token(secret: bytes, username: str, ttl: int = SESSION_TTL) -> str:
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "iss": "argocd",
        "sub": f"{username}:login",
        "exp": now + ttl,
        "nbf": now,
        "iat": now,
        "jti": _b64(hashlib.sha256(f"{username}{time.time_ns()}".encode()).digest()[:12]),
    }
    payload = _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def verify_token(secret: bytes, token: str) -> str:
    """Username for a valid token; raises ApiError(16) with Argo CD's messages otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ApiError(16, "invalid session: token contains an invalid number of segments")
    expected = _b64(hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        raise ApiError(16, "invalid session: token signature is invalid: signature is invalid")
    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    if claims.get("exp", 0) < time.time():
        raise ApiError(16, "invalid session: token has invalid claims: token is expired")
    return str(claims.get("sub", "")).split(":", 1)[0]


# ---- request handling ------------------------------------------------------------------------------------

Route = tuple[str, re.Pattern[str], str, bool]
_ROUTES: list[Route] = [
    (m, re.compile(p + "$"), h, auth)
    for m, p, h, auth in (
        ("GET", r"/api/version", "get_version", False),
        ("POST", r"/api/v1/session", "create_session", False),
        ("DELETE", r"/api/v1/session", "delete_session", False),
        ("GET", r"/api/v1/session/userinfo", "get_userinfo", False),
        ("GET", r"/api/v1/applications", "list_apps", True),
        ("GET", r"/api/v1/applications/([^/]+)", "get_app", True),
        ("GET", r"/api/v1/applications/([^/]+)/revisions/([^/]+)/metadata", "revision_metadata", True),
        ("GET", r"/api/v1/applications/([^/]+)/resource-tree", "resource_tree", True),
        ("GET", r"/api/v1/applications/([^/]+)/managed-resources", "managed_resources", True),
        ("GET", r"/api/v1/applications/([^/]+)/manifests", "get_manifests", True),
        ("GET", r"/api/v1/applications/([^/]+)/resource", "get_resource", True),
        ("POST", r"/api/v1/applications/([^/]+)/resource/actions", "run_action", True),
        ("POST", r"/api/v1/applications/([^/]+)/resource/actions/v2", "run_action_v2", True),
        ("GET", r"/api/v1/applications/([^/]+)/syncwindows", "app_syncwindows", True),
        ("POST", r"/api/v1/applications/([^/]+)/sync", "sync_app", True),
        ("POST", r"/api/v1/applications/([^/]+)/rollback", "rollback_app", True),
        ("GET", r"/api/v1/stream/applications", "stream_apps", True),
        ("GET", r"/api/v1/projects", "list_projects", True),
        ("GET", r"/api/v1/projects/([^/]+)", "get_project", True),
        ("GET", r"/api/v1/projects/([^/]+)/syncwindows", "project_syncwindows", True),
        ("GET", r"/api/v1/clusters", "list_clusters", True),
        ("GET", r"/api/v1/clusters/([^/]+)", "get_cluster", True),
        ("GET", r"/api/v1/applicationsets", "list_appsets", True),
        ("GET", r"/api/v1/applicationsets/([^/]+)", "get_appset", True),
        ("GET", r"/healthz", "healthz", False),
        ("GET", r"/sandbox/state", "admin_state", False),
        ("GET", r"/sandbox/faults", "admin_get_faults", False),
        ("POST", r"/sandbox/faults", "admin_set_faults", False),
        ("POST", r"/sandbox/reset-faults", "admin_reset_faults", False),
        ("POST", r"/sandbox/reconcile", "admin_reconcile", False),
        ("POST", r"/sandbox/rollouts/([^/]+)/([a-z-]+)", "admin_rollout_action", False),
        ("GET", r"/sandbox/sync-windows", "admin_get_windows", False),
        ("POST", r"/sandbox/sync-windows", "admin_set_windows", False),
    )
]


class _Dropped(Exception):
    """The connection is abandoned without a response (timeout fault, client gone)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY each keep-alive request waits
    # ~40 ms for the client's delayed ACK, which a real Argo CD or GitHub does not add.
    disable_nagle_algorithm = True
    server: _Server
    server_version = "argocd-sandbox"

    # -- plumbing ------------------------------------------------------------------------------------------
    @property
    def emu(self) -> ArgoCDEmulator:
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo would drown in access logs

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        path = url.path.rstrip("/") or "/"
        self._body: bytes | None = None
        try:
            self._read_body()
            if not path.startswith("/sandbox/"):
                self._inject_faults(path)
            for m, pattern, name, auth in _ROUTES:
                match = pattern.match(path)
                if match and m == method:
                    if method == "POST" and path.startswith("/api/") and not self._is_json():
                        self._send_text(415, "Invalid content type")
                        return
                    self.user = self._authenticate() if auth else ""
                    getattr(self, name)(*[unquote(g) for g in match.groups()])
                    return
            if any(p.match(path) for _, p, _, _ in _ROUTES):
                raise ApiError(12, f"Method Not Allowed: {method} {path}")
            raise ApiError(5, "Not Found")
        except ApiError as err:
            self._send_error(err)
        except _Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""

    def _json_body(self) -> dict[str, Any]:
        if not self._body:
            return {}
        try:
            data = json.loads(self._body)
        except ValueError as exc:
            raise ApiError(3, f"invalid character in request body: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(3, "request body must be a JSON object")
        return data

    def _is_json(self) -> bool:
        return "application/json" in (self.headers.get("Content-Type") or "").lower()

    def _q(self, key: str, default: str = "") -> str:
        return (self.query.get(key) or [default])[0]

    def _qlist(self, *keys: str) -> list[str]:
        return [v for k in keys for raw in self.query.get(k, []) for v in raw.split(",") if v]

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json", headers)

    def _send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send_error(self, err: ApiError) -> None:
        status = GRPC_TO_HTTP.get(err.code, 500)
        self._send_json({"error": err.message, "code": err.code, "message": err.message}, status)

    # -- faults ----------------------------------------------------------------------------------------------
    def _inject_faults(self, path: str) -> None:
        f = self.emu.faults
        if not f.applies_to(path):
            return
        if f.latency_ms:
            self.emu.stopping.wait(f.latency_ms / 1000)
        if f.timeout:
            # Hang past client timeouts, bounded, and give up at once when the emulator stops.
            self.emu.stopping.wait(f.timeout_s)
            raise _Dropped
        if f.error_rate and random.random() < f.error_rate:
            with self.emu.lock:
                if f.count is not None:
                    if f.count <= 0:
                        return
                    f.count -= 1
            if f.html:
                phrase = HTTPStatus(f.status).phrase if f.status in HTTPStatus._value2member_map_ else "Error"
                html = f"<html><head><title>{f.status} {phrase}</title></head><body><center><h1>{f.status} {phrase}</h1></center></body></html>"
                self._send(f.status, html.encode(), "text/html")
                raise _Dropped
            code = HTTP_TO_GRPC.get(f.status, 2)
            message = f"sandbox fault: injected {f.status}"
            self._send_json({"error": message, "code": code, "message": message}, f.status)
            raise _Dropped

    # -- auth ------------------------------------------------------------------------------------------------
    def _token(self) -> str:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == "argocd.token":
                return value
        return ""

    def _authenticate(self) -> str:
        token = self._token()
        if not token:
            raise ApiError(16, "no session information")
        if self.emu.faults.expire_tokens:
            raise ApiError(16, "invalid session: token has invalid claims: token is expired")
        if hmac.compare_digest(token, self.emu.static_token):
            return self.emu.username
        return verify_token(self.emu.jwt_secret, token)

    def create_session(self) -> None:
        body = self._json_body()
        if body.get("username") != self.emu.username or body.get("password") != self.emu.password:
            raise ApiError(16, "Invalid username or password")
        token = issue_token(self.emu.jwt_secret, self.emu.username)
        self._send_json(
            {"token": token}, headers={"Set-Cookie": f"argocd.token={token}; path=/; SameSite=lax; httpOnly"}
        )

    def delete_session(self) -> None:
        self._send_json({}, headers={"Set-Cookie": "argocd.token=; path=/; Max-Age=0"})

    def get_userinfo(self) -> None:
        try:
            user = self._authenticate()
        except ApiError:
            self._send_json({"loggedIn": False})
            return
        self._send_json({"loggedIn": True, "username": user, "iss": "argocd"})

    def get_version(self) -> None:
        try:
            self._authenticate()
        except ApiError:
            self._send_json({"Version": VERSION["Version"]})
            return
        self._send_json(VERSION)

    def healthz(self) -> None:
        self._send_text(200, "ok")

    # -- applications ----------------------------------------------------------------------------------------
    def _app_filter(self) -> Callable[[dict[str, Any]], bool]:
        projects = set(self._qlist("projects", "project"))
        name = self._q("name")
        repo = normalize_repo_url(self._q("repo")) if self._q("repo") else ""
        namespace = self._q("appNamespace")
        try:
            reqs = parse_selector(self._q("selector"))
        except SelectorError as exc:
            raise ApiError(2, f"error parsing the selector: {exc}") from None

        def accept(app: dict[str, Any]) -> bool:
            meta, spec = app["metadata"], app["spec"]
            if name and meta["name"] != name:
                return False
            if namespace and namespace != meta["namespace"]:
                return False
            if projects and spec["project"] not in projects:
                return False
            if repo:
                sources = spec.get("sources") or [spec.get("source", {})]
                if not any(normalize_repo_url(s.get("repoURL", "")) == repo for s in sources):
                    return False
            return selector_matches(reqs, meta.get("labels"))

        return accept

    def list_apps(self) -> None:
        accept = self._app_filter()
        selection = FieldSelection.parse(self.query.get("fields", []))
        # The projections and the answer (and the render of any app changed since the last
        # reconcile) are acyclic: built with the collector paused (core.gcscope). 10,000 projected
        # apps are ~250,000 new dicts, and the full collections of this Python process they set off
        # (each walking the whole fleet and its renders) took 0.5-1.5 s of the list's 0.5 s of
        # work; Argo CD's Go collector runs alongside its handlers instead.
        body = bulk_call(lambda: self._list_body(accept, selection))
        self._send(200, body, "application/json")

    def _list_body(self, accept: Callable[[dict[str, Any]], bool], selection: FieldSelection | None) -> bytes:
        with self.emu.lock:
            items = [a.to_json() for a in self.emu.apps.values()]
            rv = str(self.emu.rv)
        items = [i for i in items if accept(i)]
        if selection is not None:
            items = [selection.project_item(i) for i in items]
        return json.dumps(
            {"metadata": {"resourceVersion": rv}, "items": items}, separators=(",", ":")
        ).encode()

    def _visible_app(self, name: str) -> AppState:
        projects = self._qlist("project", "projects")
        if len(projects) > 1:
            raise ApiError(3, "multiple projects are not supported")
        project = projects[0] if projects else None
        app = self.emu.apps.get(name)
        if app is None or (project and app.definition.team != project):
            raise not_visible(name, project)
        return app

    def get_app(self, name: str) -> None:
        if self._q("refresh") in ("normal", "hard"):
            self.emu.reconcile()  # like Argo CD: blocks until the app has been re-reconciled
        with self.emu.lock:
            body = self._visible_app(name).to_json_bytes()
        self._send(200, body, "application/json")

    def revision_metadata(self, name: str, revision: str) -> None:
        with self.emu.lock:
            app = self._visible_app(name)
            history = list(app.history)
        version_id = self._q("versionId")
        if version_id and not any(str(h["id"]) == version_id for h in history):
            raise ApiError(5, f"application {name} has no history entry with id {version_id}")
        sha = self.emu.git.resolve(revision)
        if sha is None:
            raise ApiError(2, f"error getting revision metadata: unable to resolve revision {revision!r}")
        info = self.emu.git.commit(sha)
        body: dict[str, Any] = {"author": info.author, "date": ts(info.author_time), "message": info.message}
        if info.tags:
            body["tags"] = list(info.tags)
        self._send_json(body)

    def resource_tree(self, name: str) -> None:
        with self.emu.lock:
            app = self._visible_app(name)
            body = resources.resource_tree(app)
        self._send_json(body)

    def managed_resources(self, name: str) -> None:
        with self.emu.lock:
            app = self._visible_app(name)
            target, synced, definition, health = app.target, app.synced, app.definition, app.health
        items = resources.managed_resources(self.emu.renderer, definition, target, synced, health)
        self._send_json({"items": items})

    def get_manifests(self, name: str) -> None:
        """Render the app at a revision, as Argo CD's repo-server would (GetManifests)."""
        with self.emu.lock:
            definition = self._visible_app(name).definition
        if definition.multi_source:
            revisions = self.query.get("revisions", [])
            positions = self.query.get("sourcePositions", [])
            if len(revisions) != len(positions):
                raise ApiError(3, "sourcePositions and revisions must have the same length")
            by_position: dict[int, str] = {}
            for pos, rev in zip(positions, revisions, strict=True):
                if not pos.isdigit() or not 1 <= int(pos) <= 2:
                    raise ApiError(3, f"source position is out of range: {pos}")
                by_position[int(pos)] = rev
            wanted = [by_position.get(1) or definition.branch, by_position.get(2) or definition.branch]
        else:
            wanted = [self._q("revision") or definition.branch]
        shas = []
        for i, rev in enumerate(wanted, 1):
            sha = self.emu.git.resolve(rev)
            if sha is None:
                where = f" for source {i} of {len(wanted)}" if definition.multi_source else ""
                raise ApiError(
                    2,
                    f"error generating manifests{where}: rpc error: code = Unknown desc = "
                    f"unable to resolve '{rev}' to a commit SHA",
                )
            shas.append(sha)
        try:
            objects = self.emu.renderer.render(definition, shas[0], shas[-1])
        except RenderError as exc:
            raise ApiError(
                2, f"Manifest generation error (cached): rpc error: code = Unknown desc = {exc}"
            ) from None
        manifests = [json.dumps(hide_secret_data(o), separators=(",", ":")) for o in objects]
        self._send_json(
            {
                "manifests": manifests,
                "namespace": definition.namespace,
                "server": definition.cluster.server,
                "revision": shas[0],
                "sourceType": definition.source_type,
            }
        )

    def get_resource(self, name: str) -> None:
        """One managed resource's live object (GetResource: ``manifest`` is the object as JSON)."""
        group, kind, resource = self._q("group"), self._q("kind"), self._q("resourceName")
        with self.emu.lock:
            app = self._visible_app(name)
            obj = resources.live_resource(
                self.emu.renderer, app, group=group, kind=kind, name=resource, namespace=self._q("namespace")
            )
        if obj is None:
            # Argo CD: the resource must be part of the app's tree.
            raise ApiError(3, f"{kind} {group} {resource} not found as part of application {name}")
        self._send_json({"manifest": json.dumps(obj, separators=(",", ":"))})

    def _action_target(self, name: str, group: str, kind: str, resource: str) -> AppState:
        app = self._visible_app(name)
        d = app.definition
        if (group, kind, resource) != (d.workload_group, d.workload, d.app) or app.rollout is None:
            raise ApiError(3, f"{kind} {group} {resource} not found as part of application {name}")
        return app

    def run_action(self, name: str) -> None:
        """RunResourceAction (v1): the body is the action's name as a JSON string."""
        try:
            action = json.loads(self._body or b'""')
        except ValueError:
            raise ApiError(3, "invalid action") from None
        if not isinstance(action, str):
            raise ApiError(3, "invalid action")
        with self.emu.lock:
            app = self._action_target(name, self._q("group"), self._q("kind"), self._q("resourceName"))
            self.emu.rollout_action(app, action)
        self._send_json({})

    def run_action_v2(self, name: str) -> None:
        """RunResourceActionV2: resource and action named in the JSON body."""
        body = self._json_body()
        with self.emu.lock:
            app = self._action_target(
                name, str(body.get("group", "")), str(body.get("kind", "")), str(body.get("resourceName", ""))
            )
            self.emu.rollout_action(app, str(body.get("action", "")))
        self._send_json({})

    def app_syncwindows(self, name: str) -> None:
        with self.emu.lock:
            app = self._visible_app(name)
            windows = self.emu.windows_for(app.definition)
        active = self.emu.active_windows(windows)
        body: dict[str, Any] = {"canSync": can_sync(windows, datetime.now(UTC), manual=True)}
        if windows:
            body["assignedWindows"] = [app_window_view(w) for w in windows]
        if active:
            body["activeWindows"] = [app_window_view(w) for w in active]
        self._send_json(body)

    def _check_can_sync(self, app: AppState) -> None:
        if app.pending or app.running:
            raise ApiError(9, "another operation is already in progress")
        if not can_sync(self.emu.windows_for(app.definition), datetime.now(UTC), manual=True):
            raise ApiError(PERMISSION_DENIED, "cannot sync: blocked by sync window")

    def sync_app(self, name: str) -> None:
        body = self._json_body()
        with self.emu.lock:
            app = self._visible_app(name)
            self._check_can_sync(app)
            definition = app.definition
        revision = str(body.get("revision") or "")
        if not revision and body.get("revisions"):
            positions = body.get("sourcePositions") or [1]
            revision = str(body["revisions"][positions.index(1)] if 1 in positions else "")
        dry_run = bool(body.get("dryRun"))
        items = (
            (body.get("syncOptions") or {}).get("items")
            if isinstance(body.get("syncOptions"), dict)
            else None
        )
        options = [str(o) for o in items or [] if isinstance(o, str)]  # applicationSyncOptions
        if definition.auto_sync and revision and revision not in (definition.branch, "HEAD") and not dry_run:
            raise ApiError(9, f"Cannot sync to {revision}: auto-sync currently set to {definition.branch}")
        sha = self.emu.git.resolve(revision or definition.branch)
        if sha is None:
            raise ApiError(
                2, f"error resolving repo revision: Unable to resolve '{revision}' to a commit SHA"
            )
        content = self.emu.content_at(sha, definition)
        with self.emu.lock:
            app = self._visible_app(name)
            self._check_can_sync(app)
            self.emu.request_sync(
                app, content, self.user, dry_run=dry_run, prune=bool(body.get("prune")), sync_options=options
            )
            out = app.to_json()
        self._send_json(out)

    def rollback_app(self, name: str) -> None:
        body = self._json_body()
        try:
            wanted = int(body.get("id", -1))
        except (TypeError, ValueError):
            raise ApiError(3, "invalid rollback id") from None
        with self.emu.lock:
            app = self._visible_app(name)
            if app.definition.auto_sync:
                raise ApiError(9, "rollback cannot be initiated when auto-sync is enabled")
            entry = next((h for h in app.history if h["id"] == wanted), None)
            if entry is None:
                raise ApiError(3, f"application {name} does not have deployment with id {wanted}")
            self._check_can_sync(app)
            definition = app.definition
        revision = entry.get("revision") or entry["revisions"][0]
        content = self.emu.content_at(revision, definition)
        with self.emu.lock:
            app = self._visible_app(name)
            self._check_can_sync(app)
            self.emu.request_sync(
                app, content, self.user, dry_run=bool(body.get("dryRun")), prune=bool(body.get("prune"))
            )
            out = app.to_json()
        self._send_json(out)

    # -- watch stream ---------------------------------------------------------------------------------------
    def stream_apps(self) -> None:
        accept = self._app_filter()
        fields = [f.strip() for v in self.query.get("fields", []) for f in v.split(",") if f.strip()]
        sse = "text/event-stream" in (self.headers.get("Accept") or "")
        rv_param = self._q("resourceVersion")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
        self.send_header("Cache-Control", "no-cache")
        # Chunked like Go's net/http: each flushed event reaches line-reading clients at once.
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        # The last message sent per app, as projected. Compared as dicts, not as JSON: a monorepo
        # commit re-renders every app and the serialisation of unchanged ones cost more than the
        # rest. Rendered bodies are never mutated once rendered (AppState.to_json's cache relies on
        # that too), so holding them is holding what was sent.
        last_sent: dict[str, dict[str, Any]] = {}
        mask = compile_paths(fields) if fields else None  # once per stream, not per event

        def emit(kind: str, app: dict[str, Any]) -> None:
            if not accept(app):
                return
            message: dict[str, Any] = {"result": {"type": kind, "application": app}}
            if mask is not None:
                message = project_mask(message, mask)
            name = app["metadata"]["name"]
            if last_sent.get(name) == message:
                return  # Argo CD skips an event identical to the previous one for the app
            last_sent[name] = message
            line = json.dumps(message, separators=(",", ":"))
            if not out:
                first_at[0] = time.monotonic()
            out.append(f"data: {line} \n\n" if sse else line + "\n")
            if len(out) >= STREAM_EVENTS_PER_WRITE:
                flush()

        # Events are written a few dozen at a time, and none waits more than STREAM_WRITE_DELAY: one
        # unbuffered socket write per event (10,000 after a monorepo commit) hands the GIL over
        # each time, and in a busy process (the bench: the forge, the portal's test client) taking
        # it back costs up to a switch interval per event. Clients read lines either way.
        out: list[str] = []
        first_at = [0.0]  # when the oldest buffered event was buffered

        def flush(*, due: bool = False) -> None:
            if out and (not due or time.monotonic() - first_at[0] >= STREAM_WRITE_DELAY):
                self._chunk("".join(out))
                out.clear()

        with self.emu.lock:
            current = self.emu.rv
            # Argo CD sends the initial ADDED burst sorted by name (API.md section 6), each app as the
            # informer holds it when sent: rendered one at a time, never the whole fleet at once.
            initial = sorted(self.emu.apps.items()) if (not rv_param or self._q("name")) else []
        for name, app in initial:
            with self.emu.lock:
                if self.emu.apps.get(name) is not app:
                    continue  # deleted (or replaced) since: its DELETED/ADDED follows from the hub
                if not accept(app.selection()):
                    continue
                body = app.to_json()
            emit("ADDED", body)
        flush()
        after = int(rv_param) if rv_param.isdigit() and not initial else current
        try:
            self._pump(after, accept, emit, flush, sse)
        finally:
            self.emu.hub.delivered(self, None)
            self.wfile.write(b"0\r\n\r\n")  # end of the chunked body: the stream ends cleanly

    def _chunk(self, text: str) -> None:  # one HTTP chunk: one or more whole events
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _pump(
        self,
        after: int,
        accept: Callable[[dict[str, Any]], bool],
        emit: Callable[[str, dict[str, Any]], None],
        flush: Callable[..., None],
        sse: bool,
    ) -> None:
        last_keepalive = time.monotonic()
        while not self.emu.stopping.is_set():
            if self._client_gone():
                return  # free this stream's state now, not at the next failed write
            events, dropped = self.emu.hub.since(after, timeout=0.25)
            if dropped:
                flush()
                err = {
                    "grpc_code": 10,
                    "http_code": 409,
                    "http_status": "Conflict",
                    "message": "watch fell behind: too many changes, re-list",
                }
                text = json.dumps({"error": err})
                self._chunk(f"data: {text} \n\n" if sse else text + "\n")
                return
            for event in events:
                after = max(after, event.rv)
                if event.snapshot is not None:
                    emit(event.type, event.snapshot)
                    flush(due=True)
                    continue
                with self.emu.lock:
                    if event.app is None or self.emu.apps.get(event.name) is not event.app:
                        continue
                    if not accept(event.app.selection()):
                        continue  # filtered out: not rendered (a monorepo commit moves every app)
                    body = event.app.to_json()
                emit(event.type, body)
                flush(due=True)  # the events skipped meanwhile must not hold a buffered one back
            flush()
            self.emu.hub.delivered(self, after)
            if sse and time.monotonic() - last_keepalive >= self.emu.keepalive_interval:
                self._chunk(":\n")
                last_keepalive = time.monotonic()

    def _client_gone(self) -> bool:
        """The client closed the stream: its socket reads as at end of file (a client never sends
        anything on a watch request once its headers are read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- projects, clusters, applicationsets -----------------------------------------------------------------
    def list_projects(self) -> None:
        items = [resources.project_json(self.emu, p) for p in self.emu.projects()]
        self._send_json({"metadata": {"resourceVersion": str(self.emu.rv)}, "items": items})

    def get_project(self, name: str) -> None:
        if name not in self.emu.projects():
            raise ApiError(5, f'appprojects.argoproj.io "{name}" not found')
        self._send_json(resources.project_json(self.emu, name))

    def project_syncwindows(self, name: str) -> None:
        if name not in self.emu.projects():
            raise ApiError(5, f'appprojects.argoproj.io "{name}" not found')
        # Argo CD returns the currently *active* windows here.
        self._send_json(
            {"windows": [dict(w) for w in self.emu.active_windows(self.emu.project_windows(name))]}
        )

    def list_clusters(self) -> None:
        items = resources.cluster_list(self.emu)
        server, name = self._q("server"), self._q("name")
        id_type, id_value = self._q("id.type"), self._q("id.value")
        if id_value:
            server, name = (server, id_value) if id_type == "name" else (id_value, name)
        items = [
            c for c in items if (not server or c["server"] == server) and (not name or c["name"] == name)
        ]
        self._send_json({"metadata": {}, "items": items})

    def get_cluster(self, ident: str) -> None:
        by_name = self._q("id.type") == "name"
        for c in resources.cluster_list(self.emu):
            if (c["name"] if by_name else c["server"]) == ident:
                self._send_json(c)
                return
        raise ApiError(PERMISSION_DENIED, "permission denied")

    def list_appsets(self) -> None:
        projects = set(self._qlist("projects", "project"))
        try:
            reqs = parse_selector(self._q("selector"))
        except SelectorError as exc:
            raise ApiError(2, f"error parsing the selector: {exc}") from None
        items = [
            s
            for s in appsets.appsets(self.emu)
            if (not projects or s["spec"]["template"]["spec"]["project"] in projects)
            and selector_matches(reqs, s["metadata"].get("labels"))
        ]
        self._send_json({"metadata": {}, "items": items})

    def get_appset(self, name: str) -> None:
        for s in appsets.appsets(self.emu):
            if s["metadata"]["name"] == name:
                self._send_json(s)
                return
        raise ApiError(PERMISSION_DENIED, "permission denied")

    # -- sandbox admin ---------------------------------------------------------------------------------------
    def admin_state(self) -> None:
        self._send_json(self.emu.state_summary())

    def admin_get_faults(self) -> None:
        self._send_json(self.emu.faults.as_dict())

    def admin_set_faults(self) -> None:
        try:
            data = json.loads(self._body or b"{}")
            with self.emu.lock:
                self.emu.faults.update(data)
        except (ValueError, TypeError) as exc:
            self._send_json({"error": str(exc)}, 400)
            return
        self.emu.wake()
        self._send_json(self.emu.faults.as_dict())

    def admin_reset_faults(self) -> None:
        from sandbox.argocd.emulator import Faults

        with self.emu.lock:
            self.emu.faults = Faults()
        self.emu.wake()
        self._send_json(self.emu.faults.as_dict())

    def admin_rollout_action(self, name: str, action: str) -> None:
        """Abort (or resume, promote-full, retry) an app's Rollout: the tests' and demo's lever."""
        try:
            with self.emu.lock:
                app = self.emu.apps.get(name)
                if app is None:
                    raise ApiError(5, f'applications.argoproj.io "{name}" not found')
                self.emu.rollout_action(app, action)
                body = {"app": name, "health": app.health, "message": app.health_message}
        except ApiError as err:
            self._send_json({"error": err.message}, GRPC_TO_HTTP.get(err.code, 400))
            return
        self._send_json(body)

    def admin_get_windows(self) -> None:
        self._send_json(self.emu.sync_windows)

    def admin_set_windows(self) -> None:
        """Replace a project's sync windows: ``{"project", "windows": [...]}``; ``closed_for``
        (seconds) instead of ``windows`` adds a deny window on prod clusters closing syncs from now."""
        try:
            data = self._json_body()
            project = str(data.get("project") or "")
            if not project:
                raise ValueError("project is required")
            if "closed_for" in data:
                windows = [*self.emu.sync_windows.get(project, []), closing_window(float(data["closed_for"]))]
            else:
                windows = list(data.get("windows") or [])
            for window in windows:
                validate_window(window)
        except (ApiError, ValueError, TypeError, KeyError) as exc:
            self._send_json({"error": str(exc)}, 400)
            return
        with self.emu.lock:
            self.emu.sync_windows[project] = windows
        self.emu.wake()
        self._send_json({"project": project, "windows": windows})

    def admin_reconcile(self) -> None:
        self.emu.reconcile()
        self._send_json({"head": self.emu.head, "resourceVersion": str(self.emu.rv)})
