"""The emulated Argo CD: builds Applications from the demo repo and converges them like the real
application controller (OutOfSync on a new desired tree, automated sync, history, health)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.gcscope import bulk_call
from sandbox.argocd.appsets import is_progressive, progressive_sync
from sandbox.argocd.git import GitReader, Touch, object_ids
from sandbox.argocd.model import (
    DEFAULT_HISTORY_LIMIT,
    AppDef,
    AppState,
    ClusterDef,
    Content,
    Operation,
    ts,
)
from sandbox.argocd.render import Renderer, RenderError
from sandbox.argocd.rollouts import RolloutState
from sandbox.argocd.windows import can_sync, window_active, window_matches_app
from sandbox.repogen import Kustomization, parse_cluster_file, parse_helm_values, parse_kustomization

log = logging.getLogger(__name__)

EMPTY = Content(revision="", key=("", ""), kustomization=Kustomization())

# Default project windows: a year-end change freeze on prod for payments. Active only Dec 24-27, so it
# does not disturb tests on other days; pass ``sync_windows={}`` for none at all.
DEFAULT_SYNC_WINDOWS: dict[str, list[dict[str, Any]]] = {
    "payments": [
        {
            "kind": "deny",
            "schedule": "0 0 24 12 *",
            "duration": "72h",
            "clusters": ["prod-*"],
            "manualSync": True,
            "description": "Year-end change freeze",
        }
    ]
}


class ApiError(Exception):
    """An Argo CD API error: gRPC code + message (the server maps the code to an HTTP status)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


PERMISSION_DENIED = 7


def not_visible(name: str, project: str | None) -> ApiError:
    # Argo CD hides existence: 403 unless the caller named a project (then 404).
    if project:
        return ApiError(5, f'applications.argoproj.io "{name}" not found')
    return ApiError(PERMISSION_DENIED, "permission denied")


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    status: int = 500
    count: int | None = None  # how many more requests may fail (None: unlimited)
    html: bool = False  # proxy-style HTML error body instead of the Argo CD JSON error
    timeout: bool = False
    timeout_s: float = 35.0
    paths: list[str] = field(default_factory=list)  # globs limiting latency/errors/timeouts
    expire_tokens: bool = False
    fail_sync_apps: list[str] = field(default_factory=list)
    degraded_tags: list[str] = field(default_factory=list)
    deny_sync_window: list[dict[str, Any]] = field(default_factory=list)

    def update(self, data: Mapping[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        for key, value in data.items():
            if key == "deny_sync_window":
                value = _normalize_windows(value)
            elif key in ("fail_sync_apps", "degraded_tags", "paths") and isinstance(value, str):
                value = [value]
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def applies_to(self, path: str) -> bool:
        return not self.paths or any(fnmatch.fnmatchcase(path, p) for p in self.paths)


def _normalize_windows(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value] if value else []
    out = []
    for item in items:
        if not isinstance(item, dict) or not item.get("project"):
            raise ValueError("deny_sync_window needs {'project': ...} (plus optional window fields)")
        window = dict(item.get("window") or {k: v for k, v in item.items() if k != "project"})
        window.setdefault("kind", "deny")
        window.setdefault("schedule", "* * * * *")
        window.setdefault("duration", "24h")
        if not any(window.get(k) for k in ("applications", "namespaces", "clusters")):
            window["applications"] = ["*"]
        window.setdefault("manualSync", False)
        out.append({"project": item["project"], "window": window})
    return out


# How long a reconcile waits for the open watch streams to deliver a new commit's refresh events
# before it syncs (see `reconcile`).
STREAM_CATCH_UP_SECONDS = 5.0


@dataclass
class _Event:
    rv: int
    type: str
    name: str
    app: AppState | None  # rendered lazily at delivery (latest state)
    snapshot: dict[str, Any] | None = None  # for DELETED


class WatchHub:
    """Ring buffer of change events for /api/v1/stream/applications.

    Each open stream reports how far it has delivered (`delivered`), so that the controller can let
    the streams catch up with a refresh of the whole fleet before it syncs (`wait_delivered`).
    """

    def __init__(self, maxlen: int = 20000) -> None:
        self._events: deque[_Event] = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._positions: dict[object, int] = {}  # open stream -> the last rv it has handled
        self._delivered = threading.Condition()  # its own: a report must not wake the streams' `since`
        self.closed = False

    def publish(self, event: _Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def since(self, rv: int, timeout: float) -> tuple[list[_Event], bool]:
        """Events newer than ``rv`` (waiting up to ``timeout``) and whether some were already dropped."""
        with self._cond:
            if not self._has_after(rv) and not self.closed:
                self._cond.wait(timeout)
            events = [e for e in self._events if e.rv > rv]
            dropped = bool(self._events) and self._events[0].rv > rv + 1 and rv > 0 and bool(events)
            return events, dropped

    def _has_after(self, rv: int) -> bool:
        return bool(self._events) and self._events[-1].rv > rv

    def delivered(self, stream: object, rv: int | None) -> None:
        """Record that `stream` has handled (sent or skipped) every event up to `rv`; None: it closed."""
        with self._delivered:
            if rv is None:
                self._positions.pop(stream, None)
            elif self._positions.get(stream) == rv:
                return  # an idle stream reports every 0.25 s: nothing moved
            else:
                self._positions[stream] = rv
            self._delivered.notify_all()

    def wait_delivered(self, rv: int, timeout: float) -> bool:
        """Wait (at most `timeout`) until every open stream has handled the events up to `rv`."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while not self.closed and any(pos < rv for pos in self._positions.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._delivered.wait(remaining)
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        with self._delivered:
            self._delivered.notify_all()


class ArgoCDEmulator:
    def __init__(
        self,
        repo_path: str | Path,
        repo_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "admin",
        password: str = "sandbox",
        token: str = "sandbox-argocd-token",
        branch: str = "main",
        reconcile_interval: float = 1.0,
        sync_delay: float = 0.0,
        health_delay: float = 0.0,
        auto_sync_envs: Sequence[str] = ("dev", "stage", "prod"),
        multi_source_apps: Sequence[str] = (),
        sync_windows: Mapping[str, list[dict[str, Any]]] | None = None,
        include_in_cluster: bool = True,
        keepalive_interval: float = 15.0,
        state_file: str | Path | None = None,
        rollout_time_scale: float = 1.0,
        progressive_sync_apps: Sequence[str] = (),
    ) -> None:
        self.repo_path = Path(repo_path)
        self.repo_url = repo_url
        self.host, self.port = host, port
        self.username, self.password, self.static_token = username, password, token
        self.branch = branch
        self.reconcile_interval = reconcile_interval
        self.sync_delay, self.health_delay = sync_delay, health_delay
        self.auto_sync_envs = tuple(auto_sync_envs)
        self.multi_source_apps = tuple(multi_source_apps)
        self.sync_windows = {
            k: list(v) for k, v in (DEFAULT_SYNC_WINDOWS if sync_windows is None else sync_windows).items()
        }
        self.include_in_cluster = include_in_cluster
        self.keepalive_interval = keepalive_interval
        self.state_file = Path(state_file) if state_file else None
        self.rollout_time_scale = rollout_time_scale  # < 1 speeds canary steps and pauses up (tests)
        self.progressive_sync_apps = tuple(progressive_sync_apps)  # app globs rolled out by RollingSync
        self.appset_status: dict[str, dict[str, Any]] = {}  # Application name -> applicationStatus entry

        self.git = GitReader(self.repo_path)
        self.renderer = Renderer(self.git)
        self.faults = Faults()
        self.hub = WatchHub()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.jwt_secret = secrets.token_bytes(32)
        self.apps: dict[str, AppState] = {}
        self.clusters: dict[str, ClusterDef] = {}
        self.head = ""
        self.rv = 0
        self.started_at = time.time()
        self._kust_cache: dict[str, Kustomization] = {}
        self._created = 0
        self._reconcile_lock = threading.Lock()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.base_url = ""

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> str:
        from sandbox.argocd.server import make_server

        self.load()
        self._server = make_server(self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731 - quick stop()
        for target, name in ((serve, "argocd-http"), (self._loop, "argocd-reconcile")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self.base_url

    def stop(self) -> None:
        self.stopping.set()
        self.hub.close()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self.save_state()

    def __enter__(self) -> ArgoCDEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(self._next_wait())
            self._wake.clear()
            if self.stopping.is_set():
                return
            try:
                self.reconcile()
            except Exception:  # keep the controller alive, like Argo CD would
                log.exception("sandbox argocd: reconcile failed")

    def _next_wait(self) -> float:
        wait = self.reconcile_interval
        now = time.time()
        with self.lock:
            for app in self.apps.values():
                if app.running and app.running.started_at is not None:
                    wait = min(wait, app.running.started_at + self.sync_delay - now)
                if app.health == "Progressing":
                    wait = min(wait, app.health_since + self.health_delay - now)
                if app.rollout is not None and (end := app.rollout.next_wake()) is not None:
                    wait = min(wait, end - now)
        return max(wait, 0.01)

    def wake(self) -> None:
        self._wake.set()

    # ---- loading --------------------------------------------------------------------------------------
    def load(self) -> None:
        """Build clusters and applications from the branch head, each synced to the head's content
        with a history of the last commits that touched its paths."""
        head = self.git.resolve(self.branch)
        if head is None:
            raise RuntimeError(f"{self.repo_path}: branch {self.branch!r} not found")
        trees = self.git.dir_trees(head)
        clusters, defs = self._definitions(head, trees)
        touches, counts = self.git.path_touches(head, DEFAULT_HISTORY_LIMIT)
        now = time.time()
        with self.lock:
            self.head = head
            self.clusters = clusters
            self.apps = {}
            for d in sorted(defs, key=lambda d: d.name):
                self.apps[d.name] = self._initial_state(d, head, trees, touches, counts, now)
            progressive_sync(self, now)  # the sets' applicationStatus from the start
        self._restore_state()

    def _definitions(self, head: str, trees: Mapping[str, str]) -> tuple[dict[str, ClusterDef], list[AppDef]]:
        cluster_paths = [p for p in trees if p.startswith("clusters/") and p.count("/") == 1]
        app_dirs = [p for p in trees if p.startswith("environments/") and p.count("/") == 2]
        self._parse_overlays({trees[p]: p.rsplit("/", 1)[1] for p in app_dirs})
        apps = sorted({p.rsplit("/", 1)[1] for p in app_dirs})
        rollout_specs = [f"{head}:apps/{a}/base/rollout.yaml" for a in apps]
        rollouts = {s.split("/")[1] for s in object_ids(self.git, rollout_specs)}
        blobs = self.git.read([f"{head}:{p}/cluster.yaml" for p in cluster_paths])
        clusters: dict[str, ClusterDef] = {}
        for p in cluster_paths:
            parsed = parse_cluster_file(blobs.get(f"{head}:{p}/cluster.yaml", ""))
            name = str(parsed.get("name") or p.split("/")[1])
            labels = dict(parsed.get("labels") or {})  # type: ignore[call-overload]
            server = str(parsed.get("server") or f"https://{name}.k8s.example")
            clusters[name] = ClusterDef(name, server, labels)
        if not self._created:
            self._created = self._bootstrap_time(head)
        by_env: dict[str, list[ClusterDef]] = {}
        for c in clusters.values():
            by_env.setdefault(c.env, []).append(c)
        defs: list[AppDef] = []
        for p in app_dirs:
            _, env, app = p.split("/")
            team = _team_of(app, self._kust_cache[trees[p]].namespace)
            kind = "Helm" if f"apps/{app}/chart" in trees else "Kustomize"
            workload = "Rollout" if app in rollouts else "Deployment"
            defs += [
                self._definition(app, env, team, c, self._created, kind, workload)
                for c in by_env.get(env, [])
            ]
        return clusters, defs

    def _parse_overlays(self, env_trees: Mapping[str, str]) -> None:
        """Parse the kustomization (or Helm values file) of every overlay tree not seen before (cached
        by tree SHA, so a new commit costs one blob read per changed overlay, not one per app)."""
        todo = sorted({t for t in env_trees if t not in self._kust_cache})
        specs = [f"{t}:{f}" for t in todo for f in ("kustomization.yaml", "values.yaml")]
        blobs = self.git.read(specs)
        for t in todo:
            self._kust_cache[t] = _parse_overlay(blobs, t, env_trees[t])

    def _definition(
        self,
        app: str,
        env: str,
        team: str,
        cluster: ClusterDef,
        created: int,
        source_type: str = "Kustomize",
        workload: str = "Deployment",
    ) -> AppDef:
        name = f"{app}-{cluster.name}"
        progressive = is_progressive(app, self.progressive_sync_apps)
        multi = source_type == "Helm" or any(
            fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(app, g) for g in self.multi_source_apps
        )
        return AppDef(
            app=app,
            env=env,
            team=team,
            cluster=cluster,
            repo_url=self.repo_url,
            branch=self.branch,
            auto_sync=env in self.auto_sync_envs and not progressive,
            multi_source=multi,
            created=created,
            source_type=source_type,
            workload=workload,
            appset=app if progressive else f"{app}-{env}",
        )

    def _bootstrap_time(self, head: str) -> int:
        out = self.git._git("rev-list", "--max-parents=0", "--format=%ct", head).decode().split()
        return int(out[-1]) if out else int(time.time())

    def _initial_state(
        self,
        d: AppDef,
        head: str,
        trees: Mapping[str, str],
        touches: Mapping[tuple[str, str], list[Touch]],
        counts: Mapping[tuple[str, str], int],
        now: float,
    ) -> AppState:
        content = self._content_from_trees(head, d, trees)
        state = AppState(definition=d, target=content, synced=content, head=head, reconciled_at=now)
        if d.workload == "Rollout":
            steps, template = self._rollout_spec(d, content)
            state.rollout = RolloutState.completed(steps, template, content.images, 1, now)
            state.rollout.time_scale = self.rollout_time_scale
        merged = touches.get((d.env, d.app), []) + touches.get(("*", d.app), [])
        unique = {t.sha: t for t in merged}  # a commit touching overlay and base deploys once
        recent = sorted(unique.values(), key=lambda t: -t.time)[:DEFAULT_HISTORY_LIMIT]
        total = counts.get((d.env, d.app), 0) + counts.get(("*", d.app), 0) - (len(merged) - len(unique))
        state.next_history_id = max(0, total - len(recent))
        by = {"automated": True} if d.auto_sync else {"username": self.username}
        for touch in reversed(recent):
            # Deployed a minute after the commit, taking a (deterministic) few seconds.
            spread = int(hashlib.sha256(f"{d.name}{touch.sha}".encode()).hexdigest()[:2], 16) % 40 + 5
            state.append_history(
                state.history_entry(touch.sha, touch.time + 60, touch.time + 60 + spread, by)
            )
        last = state.history[-1] if state.history else None
        if last is not None:
            started = _epoch(last["deployStartedAt"])
            finished = _epoch(last["deployedAt"])
            op = Operation(
                content=Content(_rev_of(last), content.key, content.kustomization), initiated_by=by
            )
            op.started_at = started
            state.op_state = self._op_state(
                state, op, "Succeeded", "successfully synced (all tasks run)", finished
            )
            state.health_since = finished + 30
        else:
            state.health_since = now
        self._touch(state, event=None)
        return state

    def _content_from_trees(self, head: str, d: AppDef, trees: Mapping[str, str]) -> Content:
        env_tree = trees.get(d.path, "")
        base_tree = trees.get(d.base_path, "")
        kust = self._kust_cache.get(env_tree)
        if kust is None and env_tree:
            self._parse_overlays({env_tree: d.app})
            kust = self._kust_cache[env_tree]
        return Content(revision=head, key=(env_tree, base_tree), kustomization=kust or Kustomization())

    def content_at(self, revision: str, d: AppDef) -> Content:
        """Desired state of an app at an arbitrary commit (manual sync to a revision, rollback)."""
        specs = [f"{revision}:{d.path}", f"{revision}:{d.base_path}"]
        ids = object_ids(self.git, specs)
        env_tree = ids.get(specs[0], "")
        kust = self._kust_cache.get(env_tree)
        if kust is None:
            names = ("kustomization.yaml", "values.yaml")
            blobs = self.git.read([f"{revision}:{d.path}/{f}" for f in names])
            blobs = {f"{env_tree}:{f}": blobs.get(f"{revision}:{d.path}/{f}", "") for f in names}
            kust = _parse_overlay(blobs, env_tree, d.app)
            if env_tree:
                self._kust_cache[env_tree] = kust
        return Content(revision=revision, key=(env_tree, ids.get(specs[1], "")), kustomization=kust)

    # ---- change bookkeeping ---------------------------------------------------------------------------
    def _touch(self, app: AppState, event: str | None = "MODIFIED") -> None:
        self.rv += 1
        app.resource_version = self.rv
        if event:
            self.hub.publish(_Event(self.rv, event, app.name, app))

    # ---- reconciliation -------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Converge now: follow the branch head, then advance operations, auto-sync and health."""
        with self._reconcile_lock:
            head = self.git.resolve(self.branch)
            if head and head != self.head:
                self._follow_head(head)
                # Argo CD's controller refreshes the apps of a new commit one by one (each a
                # manifest generation) while the API server streams each update as it is written,
                # so a sync that follows is not queued behind the refresh of the whole fleet. Here
                # the refresh is one step: let the open streams deliver it before syncing (bounded:
                # a client that stops reading does not hold the controller up for long).
                self.hub.wait_delivered(self.rv, timeout=STREAM_CATCH_UP_SECONDS)
            now = time.time()
            with self.lock:
                for app in list(self.apps.values()):
                    self._step(app, now)
                progressive_sync(self, now)
                # Argo CD's controller writes each app it reconciled, and its API server lists and
                # watches from the informer's cache of those objects: an app is rendered here when
                # it changed, not by the next list (after a monorepo commit, 10,000 apps: 0.15 s and
                # the collections it set off, inside the poller's list request). Unchanged apps keep
                # their render (`to_json` is cached per resourceVersion). Acyclic: no collection.
                bulk_call(lambda: [app.to_json() for app in self.apps.values()])

    def _follow_head(self, head: str) -> None:
        trees = self.git.dir_trees(head)
        clusters, defs = self._definitions(head, trees)
        now = time.time()
        with self.lock:
            self.head = head
            self.clusters = clusters
            wanted = {d.name: d for d in defs}
            for name in [n for n in self.apps if n not in wanted]:
                gone = self.apps.pop(name)
                self.rv += 1
                self.hub.publish(_Event(self.rv, "DELETED", name, None, snapshot=gone.to_json()))
            for name, d in sorted(wanted.items()):
                app = self.apps.get(name)
                if app is None:
                    app = AppState(definition=d, target=EMPTY, synced=EMPTY, head=head, health="Missing")
                    app.health_since = now
                    self.apps[name] = app
                    event = "ADDED"
                else:
                    event = "MODIFIED"
                app.definition = d
                app.target = self._content_from_trees(head, d, trees)
                app.head = head
                app.reconciled_at = now
                self._touch(app, event)
            self.apps = dict(sorted(self.apps.items()))

    def _step(self, app: AppState, now: float) -> None:
        for _ in range(4):  # a few transitions may happen at once when delays are zero
            if not (
                self._advance_operation(app, now) | self._advance_health(app, now) | self._auto_sync(app, now)
            ):
                return

    def _advance_operation(self, app: AppState, now: float) -> bool:
        if app.pending and app.running is None:
            requested, app.pending = app.pending, None
            requested.started_at = now
            app.running = requested
            app.op_state = self._op_state(app, requested, "Running", "one or more tasks are running", None)
            self._touch(app)
            return True
        running = app.running
        started = running.started_at if running else None
        if running is None or started is None or now < started + self.sync_delay:
            return False
        app.running = None
        self._finish_operation(app, running, started, now)
        self._touch(app)
        return True

    def _finish_operation(self, app: AppState, op: Operation, started: float, now: float) -> None:
        globs = self.faults.fail_sync_apps
        if self._matches(app.name, globs) or self._matches(app.definition.app, globs):
            message = (
                f'one or more objects failed to apply, reason: Deployment.apps "{app.definition.app}" is invalid: '
                "spec.template.spec.containers[0].image: Invalid value (sandbox fault)"
            )
            app.op_state = self._op_state(app, op, "Failed", message, now)
            app.failed_revision = op.content.revision
            app.conditions = [{"type": "SyncError", "message": message, "lastTransitionTime": ts(now)}]
        elif op.dry_run:
            app.op_state = self._op_state(app, op, "Succeeded", "successfully synced (dry run)", now)
        else:
            app.op_state = self._op_state(app, op, "Succeeded", "successfully synced (all tasks run)", now)
            app.op_state["syncResult"]["resources"][:0] = self._hook_results(app, op)
            app.synced = op.content
            app.failed_revision = None
            app.conditions = []
            app.append_history(app.history_entry(op.content.revision, started, now, op.initiated_by))
            app.health, app.health_message, app.health_since = "Progressing", "", now
            app.degraded_by_fault = False
            if app.definition.workload == "Rollout":
                self._update_rollout(app, op.content, now)

    # ---- Argo Rollouts --------------------------------------------------------------------------------
    def _rollout_spec(self, d: AppDef, content: Content) -> tuple[list[dict[str, Any]], Any]:
        """The canary steps and pod template of the app's Rollout at a content's revision."""
        try:
            objects = self.renderer.render(d, content.revision) if content.revision else []
        except RenderError:
            objects = []
        rollout = next((o for o in objects if o.get("kind") == "Rollout"), {})
        spec = rollout.get("spec") or {}
        steps = list(((spec.get("strategy") or {}).get("canary") or {}).get("steps") or [])
        return steps, spec.get("template")

    def _update_rollout(self, app: AppState, content: Content, now: float) -> None:
        steps, template = self._rollout_spec(app.definition, content)
        if app.rollout is None:
            app.rollout = RolloutState.completed(steps, template, content.images, 1, now)
            app.rollout.time_scale = self.rollout_time_scale
        else:
            app.rollout.update(steps, template, content.images, now)

    def rollout_action(self, app: AppState, action: str) -> None:
        """Run an Argo Rollouts action (abort, resume, promote-full, retry) on the app's Rollout."""
        if app.rollout is None:
            raise ApiError(3, f"action '{action}' is not available for {app.definition.app}")
        now = time.time()
        actions = {
            "abort": app.rollout.abort,
            "resume": app.rollout.resume,
            "promote-full": app.rollout.promote_full,
            "retry": app.rollout.retry,
        }
        if action not in actions:
            raise ApiError(3, f"action '{action}' is not available for Rollout {app.definition.app}")
        if actions[action](now):
            self._advance_rollout(app, now)
            self._touch(app)
        self.wake()

    def _advance_rollout(self, app: AppState, now: float) -> bool:
        rollout = app.rollout
        rollout.advance(now)
        if app.health == "Progressing" and rollout.complete and now < app.health_since + self.health_delay:
            return False
        health, message = rollout.health()
        if self._is_degraded(app):
            health, message = "Degraded", f'Rollout "{app.definition.app}" has timed out progressing.'
        if (health, message) == (app.health, app.health_message):
            return False
        app.health, app.health_message, app.health_since = health, message, now
        self._touch(app)
        return True

    def _advance_health(self, app: AppState, now: float) -> bool:
        if app.rollout is not None:
            return self._advance_rollout(app, now)
        degraded = self._is_degraded(app)
        if app.health == "Progressing":
            if now < app.health_since + self.health_delay:
                return False
            new = "Degraded" if degraded else "Healthy"
        elif app.health == "Healthy" and degraded:
            new = "Degraded"
        elif app.health == "Degraded" and app.degraded_by_fault and not degraded:
            new = "Healthy"
        else:
            return False
        app.health, app.health_since = new, now
        app.degraded_by_fault = new == "Degraded"
        app.health_message = (
            f'Deployment "{app.definition.app}" exceeded its progress deadline' if new == "Degraded" else ""
        )
        self._touch(app)
        return True

    def _auto_sync(self, app: AppState, now: float) -> bool:
        d = app.definition
        if not d.auto_sync or app.pending or app.running or app.sync_status == "Synced":
            return False
        if app.failed_revision == app.head:
            return False  # Argo CD does not retry an automated sync that failed for this revision
        if not can_sync(self.windows_for(d), datetime.now(UTC), manual=False):
            return False
        target = Content(app.head, app.target.key, app.target.kustomization)
        app.pending = Operation(
            content=target, initiated_by={"automated": True}, prune=True, requested_at=now
        )
        return self._advance_operation(app, now)

    def _is_degraded(self, app: AppState) -> bool:
        bad = set(self.faults.degraded_tags)
        if not bad:
            return False
        return any(i.new_tag in bad or i.digest in bad for i in app.synced.kustomization.images)

    @staticmethod
    def _matches(name: str, globs: Iterable[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in globs)

    def _op_state(
        self, app: AppState, op: Operation, phase: str, message: str, finished: float | None
    ) -> dict[str, Any]:
        d = app.definition
        result: dict[str, Any] = {"resources": self._sync_results(app, op)}
        if d.multi_source:
            result["revisions"] = [op.content.revision] * 2
            result["sources"] = d.sources()
        else:
            result["revision"] = op.content.revision
            result["source"] = d.source()
        state: dict[str, Any] = {
            "operation": op.json(d),
            "phase": phase,
            "message": message,
            "syncResult": result,
            "startedAt": ts(op.started_at or time.time()),
        }
        if finished is not None:
            state["finishedAt"] = ts(finished)
        return state

    def _hook_results(self, app: AppState, op: Operation) -> list[dict[str, Any]]:
        """The PreSync/Sync/PostSync hooks a sync ran, as Argo CD lists them in its sync result
        (hooks with a HookSucceeded delete policy are gone afterwards but stay in the result)."""
        try:
            objects = self.renderer.render(app.definition, op.content.revision)
        except RenderError:
            return []
        out = []
        for obj in objects:
            annotations = obj["metadata"].get("annotations") or {}
            hook = annotations.get("argocd.argoproj.io/hook")
            if not hook:
                continue
            group, _, version = obj.get("apiVersion", "v1").rpartition("/")
            item: dict[str, Any] = {
                "group": group,
                "version": version,
                "kind": obj["kind"],
                "namespace": app.definition.namespace,
                "name": obj["metadata"]["name"],
                "status": "Synced",
                "message": "Reached expected number of succeeded pods"
                if obj["kind"] == "Job"
                else f"{obj['kind'].lower()}/{obj['metadata']['name']} created",
                "hookType": hook.split(",")[0],
                "hookPhase": "Succeeded",
                "syncPhase": hook.split(",")[0]
                if hook.split(",")[0] in ("PreSync", "PostSync", "SyncFail")
                else "Sync",
            }
            if not group:
                del item["group"]
            out.append(item)
        return out

    @staticmethod
    def _sync_results(app: AppState, op: Operation) -> list[dict[str, Any]]:
        d = app.definition
        images = op.content.images
        base = [
            ("", "Service", "service"),
            (d.workload_group, d.workload, f"{d.workload.lower()}.{d.workload_group}"),
            ("policy", "PodDisruptionBudget", "poddisruptionbudget.policy"),
        ]
        out = []
        for group, kind, noun in base:
            item: dict[str, Any] = {
                "group": group,
                "version": d.workload_version if kind == d.workload else "v1",
                "kind": kind,
                "namespace": d.namespace,
                "name": d.app,
                "status": "Synced",
                "message": f"{noun}/{d.app} configured",
                "syncPhase": "Sync",
            }
            if kind == d.workload and images:
                item["images"] = images
            if not group:
                del item["group"]
            out.append(item)
        return out

    # ---- queries used by the HTTP layer ---------------------------------------------------------------
    def windows_for(self, d: AppDef) -> list[dict[str, Any]]:
        return [
            w
            for w in self.project_windows(d.team)
            if window_matches_app(w, d.name, d.namespace, d.cluster.name, d.cluster.server)
        ]

    def project_windows(self, project: str) -> list[dict[str, Any]]:
        """A project's windows; those under ``"*"`` (sandbox only: ``--sync-window '*:...'``) are
        added to every project, as if each AppProject listed them."""
        extra = [f["window"] for f in self.faults.deny_sync_window if f["project"] in (project, "*")]
        every = list(self.sync_windows.get("*", [])) if project != "*" else []
        return list(self.sync_windows.get(project, [])) + every + extra

    def active_windows(self, windows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        now = datetime.now(UTC)
        return [w for w in windows if window_active(w, now)]

    @property
    def envs(self) -> list[str]:
        """The environments, lowest first (dev, stage, prod, then any others by name)."""
        known = ("dev", "stage", "prod")
        found = {c.env for c in self.clusters.values() if c.env}
        return sorted(found, key=lambda e: (known.index(e) if e in known else len(known), e))

    def projects(self) -> list[str]:
        with self.lock:
            teams = {a.definition.team for a in self.apps.values()}
        return sorted(teams | {"default"} | (set(self.sync_windows) - {"*"}))

    def request_sync(
        self,
        app: AppState,
        content: Content,
        user: str,
        *,
        dry_run: bool,
        prune: bool,
        sync_options: Sequence[str] = (),
    ) -> None:
        app.pending = Operation(
            content=content,
            initiated_by={"username": user},
            dry_run=dry_run,
            prune=prune,
            requested_at=time.time(),
            sync_options=tuple(sync_options),
        )
        app.generation += 1
        self._touch(app)
        self.wake()

    def state_summary(self) -> dict[str, Any]:
        with self.lock:
            apps = [
                {
                    "name": a.name,
                    "app": a.definition.app,
                    "env": a.definition.env,
                    "cluster": a.definition.cluster.name,
                    "project": a.definition.team,
                    "revision": a.head,
                    "syncedRevision": a.synced.revision,
                    "lastDeployedRevision": _rev_of(a.history[-1]) if a.history else "",
                    "historyIds": [h["id"] for h in a.history],
                    "syncStatus": a.sync_status,
                    "health": a.health,
                    "operationPhase": (a.op_state or {}).get("phase", ""),
                    "images": a.synced.images,
                    "autoSync": a.definition.auto_sync,
                    "sourceType": a.definition.source_type,
                    "workload": a.definition.workload,
                    "applicationSet": a.definition.appset,
                    **({"rollout": _rollout_summary(a.rollout)} if a.rollout is not None else {}),
                }
                for a in self.apps.values()
            ]
            return {
                "head": self.head,
                "resourceVersion": str(self.rv),
                "faults": self.faults.as_dict(),
                "applications": apps,
            }

    # ---- persistence (optional) -----------------------------------------------------------------------
    def save_state(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            data = {
                name: {
                    "history": a.history,
                    "next_history_id": a.next_history_id,
                    "synced": [a.synced.revision, *a.synced.key],
                }
                for name, a in self.apps.items()
            }
        self.state_file.write_text(json.dumps({"head": self.head, "apps": data}))

    def _restore_state(self) -> None:
        if not self.state_file or not self.state_file.exists():
            return
        saved = json.loads(self.state_file.read_text()).get("apps", {})
        with self.lock:
            for name, data in saved.items():
                app = self.apps.get(name)
                if app is None:
                    continue
                app.history = data["history"]
                app.next_history_id = data["next_history_id"]
                revision, env_tree, base_tree = data["synced"]
                if (env_tree, base_tree) != app.synced.key:
                    app.synced = self.content_at(revision, app.definition)
                self._touch(app, event=None)


def _rollout_summary(rollout: RolloutState) -> dict[str, Any]:
    phase, message = rollout.phase()
    return {
        "phase": phase,
        "message": message,
        "step": rollout.step_index,
        "steps": len(rollout.steps),
        "weight": rollout.weight(),
        "revision": rollout.revision,
    }


def _parse_overlay(blobs: Mapping[str, str], tree: str, app: str) -> Kustomization:
    """An overlay's pins: its kustomization.yaml, or else a Helm-values app's values.yaml."""
    text = blobs.get(f"{tree}:kustomization.yaml", "")
    if not text and blobs.get(f"{tree}:values.yaml"):
        return parse_helm_values(blobs[f"{tree}:values.yaml"], app)
    return parse_kustomization(text)


def _team_of(app: str, namespace: str) -> str:
    suffix = f"-{app}"
    if namespace.endswith(suffix) and len(namespace) > len(suffix):
        return namespace[: -len(suffix)]
    return "default"


def _rev_of(entry: Mapping[str, Any]) -> str:
    return entry.get("revision") or (entry.get("revisions") or [""])[0]


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
