"""Secondary API objects: resource tree, managed-resource diffs, AppProjects, clusters, ApplicationSets."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from sandbox.argocd.model import (
    NAMESPACE,
    AppDef,
    AppState,
    Content,
    pod_suffix,
    replicaset_name,
    ts,
    uid_for,
)
from sandbox.argocd.render import Renderer, RenderError

if TYPE_CHECKING:
    from sandbox.argocd.emulator import ArgoCDEmulator

DEFAULT_REPLICAS = 2
K8S_VERSION = "1.31"


def _replicas(content: Content) -> int:
    return content.kustomization.replicas or DEFAULT_REPLICAS


# ---- resource tree ----------------------------------------------------------------------------------------


def resource_tree(app: AppState) -> dict[str, Any]:
    d = app.definition
    ns, created = d.namespace, ts(d.created)
    images = app.synced.images
    rs = replicaset_name(d.app, images)
    health = {"status": app.health}
    if app.health_message:
        health["message"] = app.health_message

    def node(group: str, kind: str, name: str, **extra: Any) -> dict[str, Any]:
        n: dict[str, Any] = {
            "version": "v1",
            "kind": kind,
            "namespace": ns,
            "name": name,
            "uid": uid_for(f"{d.name}/{kind}", name),
            "createdAt": created,
            "resourceVersion": str(app.resource_version),
        }
        if group:
            n["group"] = group
        n.update(extra)
        return n

    deploy_ref = {
        "group": d.workload_group,
        "kind": d.workload,
        "namespace": ns,
        "name": d.app,
        "uid": uid_for(f"{d.name}/{d.workload}", d.app),
    }
    rollout = app.rollout
    revision = rollout.revision if rollout is not None else len(app.history)
    workload = node(
        d.workload_group,
        d.workload,
        d.app,
        health=health,
        info=[{"name": "Revision", "value": f"Rev:{revision}"}],
    )
    workload["version"] = d.workload_version
    # A canary in flight runs two ReplicaSets: the stable one and the canary.
    sets = [(rs, images, _replicas(app.synced))]
    if rollout is not None and rollout.current_hash != rollout.stable_hash and not rollout.complete:
        replicas = _replicas(app.synced)
        canary = 0 if rollout.aborted else -(-replicas * rollout.weight() // 100)
        sets = [
            (f"{d.app}-{rollout.stable_hash}", rollout.stable_images, replicas),
            (f"{d.app}-{rollout.current_hash}", rollout.images, canary),
        ]
    elif rollout is not None:
        sets = [(f"{d.app}-{rollout.current_hash}", rollout.images, _replicas(app.synced))]
    nodes = [workload]
    for rs_name, _images, _count in sets:
        nodes.append(
            node(
                "apps",
                "ReplicaSet",
                rs_name,
                parentRefs=[deploy_ref],
                health={"status": "Healthy"} if rollout is not None else health,
                info=[{"name": "Revision", "value": f"Rev:{revision}"}],
            )
        )
    nodes += [
        node(
            "",
            "Service",
            d.app,
            health={"status": "Healthy"},
            networkingInfo={"targetLabels": {"app.kubernetes.io/name": d.app}},
        ),
        node("policy", "PodDisruptionBudget", d.app),
    ]
    ready = app.health != "Degraded" or rollout is not None
    pods = [(rs_name, imgs, i) for rs_name, imgs, count in sets for i in range(count)]
    for rs_name, imgs, i in pods:
        pod = f"{rs_name}-{pod_suffix(rs_name, i)}"
        rs_ref = {
            "group": "apps",
            "kind": "ReplicaSet",
            "namespace": ns,
            "name": rs_name,
            "uid": uid_for(f"{d.name}/ReplicaSet", rs_name),
        }
        nodes.append(
            node(
                "",
                "Pod",
                pod,
                parentRefs=[rs_ref],
                images=imgs,
                health={"status": "Healthy" if ready else "Degraded"},
                info=[
                    {"name": "Status Reason", "value": "Running" if ready else "CrashLoopBackOff"},
                    {"name": "Containers", "value": "1/1" if ready else "0/1"},
                ],
            )
        )
    return {"nodes": nodes, "orphanedNodes": []}


# ---- managed resources ------------------------------------------------------------------------------------


def _render(renderer: Renderer, d: AppDef, content: Content) -> dict[str, dict[str, Any]]:
    """The app's objects at a content's revision, by kind (hooks are not managed resources)."""
    if not content.revision or not content.key[1]:
        return {}
    try:
        objects = renderer.render(d, content.revision)
    except RenderError:
        return {}
    hooks = "argocd.argoproj.io/hook"
    return {o["kind"]: o for o in objects if hooks not in (o["metadata"].get("annotations") or {})}


def managed_resources(
    renderer: Renderer, d: AppDef, target: Content, synced: Content, health: str
) -> list[dict[str, Any]]:
    desired = _render(renderer, d, target)
    live = _render(renderer, d, synced)
    items = []
    kinds = (("Service", ""), (d.workload, d.workload_group), ("PodDisruptionBudget", "policy"))
    for kind, group in kinds:
        want, have = desired.get(kind), live.get(kind)
        if want is None and have is None and (desired or live):
            continue  # not part of this app (a chart without a PodDisruptionBudget)
        have_full = _with_live_fields(have, d, kind, health) if have else None
        item: dict[str, Any] = {"kind": kind, "namespace": d.namespace, "name": d.app}
        if group:
            item["group"] = group
        if want is not None:
            item["targetState"] = json.dumps(want, sort_keys=True)
            item["predictedLiveState"] = json.dumps(want, sort_keys=True)
        if have_full is not None:
            item["liveState"] = json.dumps(have_full, sort_keys=True)
            item["normalizedLiveState"] = json.dumps(have, sort_keys=True)
        if want != have:
            item["modified"] = True
            item["diff"] = json.dumps(_merge_patch(have or {}, want or {}), sort_keys=True)
        items.append(item)
    return items


def _with_live_fields(doc: dict[str, Any], d: AppDef, kind: str, health: str) -> dict[str, Any]:
    live = json.loads(json.dumps(doc))
    meta = live["metadata"]
    meta["uid"] = uid_for(f"{d.name}/{kind}", d.app)
    meta["creationTimestamp"] = ts(d.created)
    if kind in ("Deployment", "Rollout"):
        n = live["spec"].get("replicas", DEFAULT_REPLICAS)
        ready = n if health != "Degraded" else 0
        live["status"] = {
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
    return live


def _merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch from ``old`` to ``new`` (a readable diff for the UI/portal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() | new.keys():
        if key not in new:
            patch[key] = None
        elif key not in old:
            patch[key] = new[key]
        elif old[key] != new[key]:
            patch[key] = _merge_patch(old[key], new[key])
    return patch


# ---- projects ---------------------------------------------------------------------------------------------


def project_json(emu: ArgoCDEmulator, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "description": f"Services owned by the {name} team" if name != "default" else "Default project",
        "sourceRepos": [emu.repo_url] if name != "default" else ["*"],
        "destinations": [{"server": "*", "namespace": f"{name}-*" if name != "default" else "*"}],
        "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
    }
    windows = emu.project_windows(name)
    if windows:
        spec["syncWindows"] = [dict(w) for w in windows]
    if name != "default":
        spec["roles"] = [
            {
                "name": "ci",
                "description": "Automation (promotion portal)",
                "policies": [
                    f"p, proj:{name}:ci, applications, sync, {name}/*, allow",
                    f"p, proj:{name}:ci, applications, get, {name}/*, allow",
                ],
            }
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid_for("AppProject", name),
            "resourceVersion": str(len(windows) + 1),
            "generation": len(windows) + 1,
            "creationTimestamp": ts(emu.started_at),
        },
        "spec": spec,
        "status": {},
    }


# ---- clusters ---------------------------------------------------------------------------------------------


def cluster_list(emu: ArgoCDEmulator) -> list[dict[str, Any]]:
    with emu.lock:
        counts = Counter(a.definition.cluster.server for a in emu.apps.values())
        clusters = list(emu.clusters.values())
    attempted = ts(emu.started_at)
    items = []
    if emu.include_in_cluster:
        items.append(_cluster("in-cluster", "https://kubernetes.default.svc", {}, 0, attempted))
    for c in sorted(clusters, key=lambda c: c.name):
        items.append(_cluster(c.name, c.server, c.labels, counts.get(c.server, 0), attempted))
    return items


def _cluster(name: str, server: str, labels: dict[str, str], apps: int, attempted: str) -> dict[str, Any]:
    state = {"status": "Successful", "attemptedAt": attempted}
    out: dict[str, Any] = {"server": server, "name": name}
    if labels:
        out["labels"] = dict(labels)
    out.update(
        {
            "config": {"tlsClientConfig": {"insecure": False}},
            "connectionState": state,
            "serverVersion": K8S_VERSION,
            "info": {
                "connectionState": state,
                "serverVersion": K8S_VERSION,
                "cacheInfo": {"resourcesCount": apps * 6, "apisCount": 62, "lastCacheSyncTime": attempted},
                "applicationsCount": apps,
            },
        }
    )
    return out


# ---- live resources (GET /api/v1/applications/{name}/resource) ----------------------------------------------


def live_resource(
    renderer: Renderer, app: AppState, *, group: str, kind: str, name: str, namespace: str
) -> dict[str, Any] | None:
    """The live object of one managed resource, or None when the app does not manage it."""
    d = app.definition
    if namespace and namespace != d.namespace:
        return None
    live = _render(renderer, d, app.synced)
    obj = live.get(kind)
    if obj is None or obj["metadata"].get("name") != name:
        return None
    api_group = obj.get("apiVersion", "v1").rpartition("/")[0]
    if group != api_group:
        return None
    obj["metadata"]["namespace"] = d.namespace
    if kind == "Rollout" and app.rollout is not None:
        return app.rollout.live(
            obj,
            uid=uid_for(f"{d.name}/Rollout", d.app),
            created=d.created,
            resource_version=app.resource_version,
        )
    return _with_live_fields(obj, d, kind, app.health)
