"""Emulated Argo CD objects: cluster and application definitions derived from the repo, per-app
controller state, and their JSON rendering in the exact shape of the real API (camelCase, empty fields
omitted, RFC 3339 UTC whole-second times)."""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.repogen import Kustomization

NAMESPACE = "argocd"
DEFAULT_HISTORY_LIMIT = 10
_UID_NS = uuid.UUID("8f5c3d0e-5a6b-4c1e-9a34-0c1d2e3f4a5b")


def ts(epoch: float) -> str:
    return _ts(int(epoch))


# Rendering every app after a monorepo commit formats the same few seconds and uids 10,000s of times
# (fromtimestamp with a timezone and uuid5 were 60% of the emulator's render): memoised.
@functools.lru_cache(maxsize=4096)
def _ts(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=65536)
def uid_for(kind: str, name: str) -> str:
    return str(uuid.uuid5(_UID_NS, f"{kind}/{name}"))


@dataclass(frozen=True)
class ClusterDef:
    name: str
    server: str
    labels: dict[str, str]

    @property
    def env(self) -> str:
        return self.labels.get("env", "")

    @property
    def region(self) -> str:
        return self.labels.get("region", "")


@dataclass(frozen=True)
class AppDef:
    """What an ApplicationSet cluster generator would produce for one app x env x cluster."""

    app: str
    env: str
    team: str
    cluster: ClusterDef
    repo_url: str
    branch: str
    auto_sync: bool
    multi_source: bool
    created: int
    source_type: str = "Kustomize"  # or "Helm": a chart in apps/<app>/chart + the env's values.yaml
    workload: str = "Deployment"  # or "Rollout" (Argo Rollouts)
    appset: str = ""  # the ApplicationSet that generated it (its controller owner)

    @property
    def name(self) -> str:
        return f"{self.app}-{self.cluster.name}"

    @property
    def path(self) -> str:
        return f"environments/{self.env}/{self.app}"

    @property
    def base_path(self) -> str:
        return f"apps/{self.app}/chart" if self.source_type == "Helm" else f"apps/{self.app}/base"

    @property
    def namespace(self) -> str:
        return f"{self.team}-{self.app}"

    @property
    def workload_group(self) -> str:
        return "argoproj.io" if self.workload == "Rollout" else "apps"

    @property
    def workload_version(self) -> str:
        return "v1alpha1" if self.workload == "Rollout" else "v1"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.app,
            "env": self.env,
            "cluster": self.cluster.name,
            "region": self.cluster.region,
            "team": self.team,
        }

    def source(self) -> dict[str, Any]:
        return {"repoURL": self.repo_url, "path": self.path, "targetRevision": self.branch}

    def sources(self) -> list[dict[str, Any]]:
        # Second source: the same repo as a helm-values ``ref`` (the common multi-source pattern).
        values = {"repoURL": self.repo_url, "targetRevision": self.branch, "ref": "values"}
        if self.source_type == "Helm":
            chart = {
                "repoURL": self.repo_url,
                "path": self.base_path,
                "targetRevision": self.branch,
                "helm": {"valueFiles": [f"$values/{self.path}/values.yaml"]},
            }
            return [chart, values]
        return [self.source(), values]

    def destination(self) -> dict[str, Any]:
        return {"server": self.cluster.server, "namespace": self.namespace}


@dataclass(frozen=True)
class Content:
    """A desired/synced state of one app: the git trees it renders from and its parsed overlay."""

    revision: str
    key: tuple[str, str]  # (env dir tree sha, base dir tree sha)
    kustomization: Kustomization

    @property
    def images(self) -> list[str]:
        return [i.reference for i in self.kustomization.images]


@dataclass
class Operation:
    content: Content
    initiated_by: dict[str, Any]
    dry_run: bool = False
    prune: bool = False
    started_at: float | None = None
    requested_at: float = 0.0
    sync_options: tuple[str, ...] = ()

    def sync_json(self, app: AppDef) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if app.multi_source:
            out["revisions"] = [self.content.revision] * 2
        else:
            out["revision"] = self.content.revision
        if self.prune:
            out["prune"] = True
        if self.dry_run:
            out["dryRun"] = True
        if self.sync_options:
            out["syncOptions"] = list(self.sync_options)
        out["syncStrategy"] = {"hook": {}}
        return out

    def json(self, app: AppDef) -> dict[str, Any]:
        retry = {"limit": 5} if self.initiated_by.get("automated") else {}
        return {"sync": self.sync_json(app), "initiatedBy": dict(self.initiated_by), "retry": retry}


@dataclass
class AppState:
    definition: AppDef
    target: Content
    synced: Content
    head: str
    history: list[dict[str, Any]] = field(default_factory=list)
    next_history_id: int = 0
    health: str = "Healthy"
    health_message: str = ""
    health_since: float = 0.0
    degraded_by_fault: bool = False
    pending: Operation | None = None
    running: Operation | None = None
    op_state: dict[str, Any] | None = None
    failed_revision: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    reconciled_at: float = 0.0
    resource_version: int = 0
    generation: int = 1
    rollout: Any = None  # RolloutState of an Argo Rollouts app (sandbox.argocd.rollouts)
    _cache: tuple[int, dict[str, Any]] | None = None
    _body: tuple[dict[str, Any], bytes] | None = None
    _selection: tuple[AppDef, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def sync_status(self) -> str:
        return "Synced" if self.synced.key == self.target.key else "OutOfSync"

    # ---- rendering ----------------------------------------------------------------------------------
    def selection(self) -> dict[str, Any]:
        """What a list or watch filter (name, namespace, project, repo, selector) reads of the app:
        the same keys and values as `to_json`, without rendering its status. It depends on the
        definition alone, so it is built once per definition."""
        if self._selection is None or self._selection[0] is not self.definition:
            d = self.definition
            spec: dict[str, Any] = {"project": d.team}
            if d.multi_source:
                spec["sources"] = d.sources()
            else:
                spec["source"] = d.source()
            meta = {"name": d.name, "namespace": NAMESPACE, "labels": d.labels}
            self._selection = (d, {"metadata": meta, "spec": spec})
        return self._selection[1]

    def to_json(self) -> dict[str, Any]:
        """Full Application; cached per resourceVersion because lists and watches render it a lot."""
        if self._cache and self._cache[0] == self.resource_version:
            return self._cache[1]
        body = self._render()
        self._cache = (self.resource_version, body)
        return body

    def to_json_bytes(self) -> bytes:
        """The full Application as the single-app GET sends it, encoded once per rendering."""
        doc = self.to_json()
        if self._body is None or self._body[0] is not doc:  # re-rendered (or the cache was dropped)
            self._body = (doc, json.dumps(doc, separators=(",", ":")).encode())
        return self._body[1]

    def _render(self) -> dict[str, Any]:
        d = self.definition
        out: dict[str, Any] = {
            "metadata": {
                "name": d.name,
                "namespace": NAMESPACE,
                "uid": uid_for("Application", d.name),
                "resourceVersion": str(self.resource_version),
                "generation": self.generation,
                "creationTimestamp": ts(d.created),
                "labels": d.labels,
                "finalizers": ["resources-finalizer.argocd.argoproj.io"],
            },
        }
        if d.appset:
            out["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "ApplicationSet",
                    "name": d.appset,
                    "uid": uid_for("ApplicationSet", d.appset),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        out["spec"] = self._spec()
        if self.pending and self.pending.started_at is None:
            out["operation"] = self.pending.json(d)
        out["status"] = self._status()
        return out

    def _spec(self) -> dict[str, Any]:
        d = self.definition
        spec: dict[str, Any] = {"destination": d.destination(), "project": d.team}
        if d.multi_source:
            spec["sources"] = d.sources()
        else:
            spec["source"] = d.source()
        policy: dict[str, Any] = {"syncOptions": ["CreateNamespace=true"]}
        if d.auto_sync:
            policy["automated"] = {"prune": True, "selfHeal": True}
        spec["syncPolicy"] = policy
        spec["revisionHistoryLimit"] = DEFAULT_HISTORY_LIMIT
        return spec

    def _status(self) -> dict[str, Any]:
        d = self.definition
        sync: dict[str, Any] = {"status": self.sync_status, "comparedTo": {"destination": d.destination()}}
        if d.multi_source:
            sync["comparedTo"]["sources"] = d.sources()
            sync["revisions"] = [self.head, self.head]
        else:
            sync["comparedTo"]["source"] = d.source()
            sync["revision"] = self.head
        status: dict[str, Any] = {
            "resources": self.resource_statuses(),
            "sync": sync,
            "health": {"status": self.health, "lastTransitionTime": ts(self.health_since)},
        }
        if self.health_message:
            status["health"]["message"] = self.health_message
        if self.history:
            status["history"] = list(self.history)
        if self.conditions:
            status["conditions"] = list(self.conditions)
        status["reconciledAt"] = ts(self.reconciled_at)
        if self.op_state:
            status["operationState"] = self.op_state
        if d.multi_source:
            status["sourceTypes"] = [d.source_type, "Directory"]
        else:
            status["sourceType"] = d.source_type
        status["summary"] = {"images": self.synced.images} if self.synced.images else {}
        status["controllerNamespace"] = NAMESPACE
        return status

    def resource_statuses(self) -> list[dict[str, Any]]:
        d = self.definition
        out_of_sync = self.sync_status == "OutOfSync"
        health = {"status": self.health}
        return [
            {
                "version": "v1",
                "kind": "Service",
                "namespace": d.namespace,
                "name": d.app,
                "status": "Synced",
                "health": {"status": "Healthy"},
            },
            {
                "group": d.workload_group,
                "version": d.workload_version,
                "kind": d.workload,
                "namespace": d.namespace,
                "name": d.app,
                "status": "OutOfSync" if out_of_sync else "Synced",
                "health": health,
            },
            {
                "group": "policy",
                "version": "v1",
                "kind": "PodDisruptionBudget",
                "namespace": d.namespace,
                "name": d.app,
                "status": "Synced",
                "health": {"status": "Healthy"},
            },
        ]

    # ---- history ------------------------------------------------------------------------------------
    def history_entry(
        self, revision: str, started: float, finished: float, by: dict[str, Any]
    ) -> dict[str, Any]:
        d = self.definition
        entry: dict[str, Any] = {
            "deployStartedAt": ts(started),
            "deployedAt": ts(finished),
            "id": self.next_history_id,
            "initiatedBy": dict(by),
        }
        if d.multi_source:
            entry["revisions"] = [revision, revision]
            entry["sources"] = d.sources()
        else:
            entry["revision"] = revision
            entry["source"] = d.source()
        return entry

    def append_history(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self.next_history_id = entry["id"] + 1
        del self.history[: max(0, len(self.history) - DEFAULT_HISTORY_LIMIT)]


def replicaset_name(app: str, images: list[str]) -> str:
    return f"{app}-{hashlib.sha256('|'.join(images).encode()).hexdigest()[:10]}"


def pod_suffix(rs: str, i: int) -> str:
    return hashlib.sha256(f"{rs}/{i}".encode()).hexdigest()[:5]
