"""Classify the differences between Git (target) and the cluster (live) with the blueprint's categories.

- **mutation** (expected, ignorable): fields the API server or controllers write: ``status``,
  ``metadata.managedFields``, ``resourceVersion``, ``uid``, ``generation``, ``creationTimestamp``,
  annotations absent from Git (injected), the last-applied annotation, ``caBundle`` anywhere.
- **operational** (sometimes acceptable): replica counts (``spec.replicas``), e.g. manual scaling
  during an incident.
- **configuration** (never acceptable, shown loud): everything else: images, env, RBAC rules,
  resources missing from the cluster or not in Git.

Fields present only in the live object outside the mutation list are API-server defaults
(``imagePullPolicy``, ``terminationMessagePath`` ...) and are not drift, as in Argo CD's own diff,
which compares the fields Git sets. Lists of objects with a ``name`` (containers, env, ports) are
matched by name, so a container added or an env var injected by hand shows up as configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from integrations.argocd import ArgoCDError
from inventory.clients import argocd_client_for

MUTATION = "mutation"
OPERATIONAL = "operational"
CONFIGURATION = "configuration"
SEVERITY = {MUTATION: 0, OPERATIONAL: 1, CONFIGURATION: 2}
CATEGORY_LABELS = {
    MUTATION: "mutation (ignorable)",
    OPERATIONAL: "operational (replicas)",
    CONFIGURATION: "configuration",
}

_MUTATION_METADATA = {
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "ownerReferences",
    "finalizers",
}
_MUTATION_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/restartedAt",
}
_RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}
_SECRET_KINDS = {"Secret"}
_MAX_VALUE = 160


@dataclass(frozen=True)
class FieldChange:
    """One differing field: its path, category, a short reason and the two values (shortened)."""

    path: str
    category: str
    reason: str
    target: str
    live: str

    @property
    def label(self) -> str:
        return CATEGORY_LABELS[self.category]


@dataclass
class ResourceDrift:
    """One managed resource and its classified changes."""

    group: str
    kind: str
    namespace: str
    name: str
    changes: list[FieldChange] = field(default_factory=list)

    @property
    def category(self) -> str | None:
        if not self.changes:
            return None
        return max((c.category for c in self.changes), key=SEVERITY.__getitem__)

    @property
    def loud(self) -> bool:
        return self.category == CONFIGURATION

    @property
    def title(self) -> str:
        group = f"{self.group}/" if self.group else ""
        return (
            f"{group}{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{group}{self.kind} {self.name}"
        )

    def count(self, category: str) -> int:
        return sum(1 for c in self.changes if c.category == category)


@dataclass
class DriftResult:
    resources: list[ResourceDrift]
    error: str = ""

    @property
    def differing(self) -> list[ResourceDrift]:
        return [r for r in self.resources if r.changes]

    @property
    def category(self) -> str | None:
        cats = [r.category for r in self.resources if r.category]
        return max(cats, key=SEVERITY.__getitem__) if cats else None

    def count(self, category: str) -> int:
        return sum(r.count(category) for r in self.resources)


def _short(value: Any, *, hide: bool) -> str:
    if value is _ABSENT:
        return "(absent)"
    if hide:
        return "(hidden)"

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def classify_path(kind: str, path: Sequence[str], *, only_live: bool) -> tuple[str, str] | None:
    """Return (category, reason) of a differing field, or None when it is not drift (server default)."""
    head = path[0] if path else ""
    last = path[-1] if path else ""
    if head == "status":
        return MUTATION, "status is written by controllers"
    if last == "caBundle":
        return MUTATION, "CA bundle injected by a controller"
    if head == "metadata" and len(path) >= 2:
        if path[1] in _MUTATION_METADATA:
            return MUTATION, f"metadata.{path[1]} is written by the API server"
        if path[1] == "annotations" and len(path) >= 3:
            if path[2] in _MUTATION_ANNOTATIONS:
                return MUTATION, "annotation written by tooling"
            if only_live:
                return MUTATION, "annotation injected in the cluster (not in Git)"
        if path[1] == "labels" and only_live and len(path) >= 3:
            return MUTATION, "label injected in the cluster (not in Git)"
    if list(path[:2]) == ["spec", "replicas"]:
        return OPERATIONAL, "replica count changed in the cluster (manual scaling?)"
    if only_live and not _is_list_item(path):
        return None
    if kind in _RBAC_KINDS or head in ("rules", "subjects", "roleRef"):
        return CONFIGURATION, "RBAC changed"
    if last == "image" or (len(path) >= 2 and path[-2] == "image"):
        return CONFIGURATION, "image changed"
    if "env" in path or "envFrom" in path:
        return CONFIGURATION, "environment variables changed"
    if kind in _SECRET_KINDS or head in ("data", "stringData"):
        return CONFIGURATION, "data changed"
    return CONFIGURATION, "configuration differs from Git"


def _is_list_item(path: Sequence[str]) -> bool:
    # An item added to a named list (e.g. env[name=DEBUG]) is drift even though Git lacks it.
    return bool(path) and path[-1].startswith("[") and path[-1].endswith("]")


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _walk(target: Any, live: Any, path: list[str], out: list[tuple[list[str], Any, Any, bool]]) -> None:
    """Collect (path, target, live, only_live) for every differing leaf."""
    if isinstance(target, dict) and isinstance(live, dict):
        for key in sorted(set(target) | set(live), key=str):
            if key not in target:
                out.append(([*path, str(key)], _ABSENT, live[key], True))
            elif key not in live:
                out.append(([*path, str(key)], target[key], _ABSENT, False))
            else:
                _walk(target[key], live[key], [*path, str(key)], out)
        return
    if isinstance(target, list) and isinstance(live, list):
        if _named(target) and _named(live):
            by_name_t = {i["name"]: i for i in target}
            by_name_l = {i["name"]: i for i in live}
            for name in sorted(set(by_name_t) | set(by_name_l)):
                item_path = [*path, f"[{name}]"]
                if name not in by_name_t:
                    out.append((item_path, _ABSENT, by_name_l[name], True))
                elif name not in by_name_l:
                    out.append((item_path, by_name_t[name], _ABSENT, False))
                else:
                    _walk(by_name_t[name], by_name_l[name], item_path, out)
            return
        scalars = all(not isinstance(v, dict | list) for v in (*target, *live))
        if len(target) == len(live) and not scalars:
            for index, (t, v) in enumerate(zip(target, live, strict=True)):
                _walk(t, v, [*path, f"[{index}]"], out)
            return
    if target != live:
        out.append((path, target, live, False))


def _dotted(path: Sequence[str]) -> str:
    text = ""
    for part in path:
        text += part if part.startswith("[") else (f".{part}" if text else part)
    return text


def classify_resource(
    *,
    group: str,
    kind: str,
    namespace: str,
    name: str,
    target: dict[str, Any] | None,
    live: dict[str, Any] | None,
    modified: bool = False,
) -> ResourceDrift:
    """Return the classified differences of one resource between its target and live manifests."""
    result = ResourceDrift(group=group, kind=kind, namespace=namespace, name=name)
    hide = kind in _SECRET_KINDS
    if target is None and live is None:
        if modified:
            result.changes.append(FieldChange("", CONFIGURATION, "Argo CD reports a difference", "", ""))
        return result
    if target is None:
        result.changes.append(
            FieldChange(
                "", CONFIGURATION, "in the cluster but not in Git (needs pruning)", "(absent)", "present"
            )
        )
        return result
    if live is None:
        result.changes.append(
            FieldChange("", CONFIGURATION, "in Git but missing from the cluster", "present", "(absent)")
        )
        return result
    leaves: list[tuple[list[str], Any, Any, bool]] = []
    _walk(target, live, [], leaves)
    for path, t, v, only_live in leaves:
        verdict = classify_path(kind, path, only_live=only_live)
        if verdict is None:
            continue
        category, reason = verdict
        result.changes.append(
            FieldChange(_dotted(path), category, reason, _short(t, hide=hide), _short(v, hide=hide))
        )
    if modified and not result.changes:
        # Argo CD saw a difference our comparison cannot explain (e.g. normalisation): never hide it.
        result.changes.append(FieldChange("", CONFIGURATION, "Argo CD reports a difference", "", ""))
    return result


def classify_resources(items: Iterable[Any]) -> DriftResult:
    """Classify `integrations.argocd.ResourceDiff` items (or anything with the same attributes)."""
    resources = [
        classify_resource(
            group=item.group,
            kind=item.kind,
            namespace=item.namespace,
            name=item.name,
            target=item.target_state,
            live=item.live_state,
            modified=item.modified,
        )
        if item.modified
        else ResourceDrift(group=item.group, kind=item.kind, namespace=item.namespace, name=item.name)
        for item in items
    ]
    resources.sort(key=lambda r: (-SEVERITY.get(r.category or "", -1), r.kind, r.name))
    return DriftResult(resources=resources)


def drift_resources_fetch(*, argo_app: Any) -> DriftResult:
    """Read an app's managed resources from its Argo CD instance now and classify them."""
    try:
        items = argocd_client_for(argo_app.instance).managed_resources(argo_app.name)
    except ArgoCDError as exc:
        return DriftResult(resources=[], error=str(exc)[:500] or exc.__class__.__name__)
    return classify_resources(items)
