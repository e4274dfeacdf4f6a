"""Rendered Kubernetes objects compared, pure: identity, canonical YAML, object diff, sync order.

- `canonical_yaml`: an object as stable YAML (keys sorted, `status` and server-set metadata
  dropped), so a diff shows what the change alters and nothing the cluster or Argo CD adds;
- `object_diff`: objects added, removed and changed (identity: group, kind, namespace, name), with a
  unified diff of each changed object. A core `Secret` is never shown: only which keys of its
  `data`/`stringData` were added, removed or changed; its values are never shown, stored or logged
  (Argo CD masks them already; `redact_secrets` masks them again for anyone reading the objects);
- `sync_plan`: the order Argo CD applies a revision in (phase, wave, kind, name, as gitops-engine
  sorts its sync tasks), with the changed objects marked and a callout when the change adds or
  alters a PreSync hook (a migration Job runs before anything else).
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

from core.diffs import classify_diff, diff_text

# Metadata the API server, kubectl or Argo CD sets: not part of what the change says.
SERVER_SET_METADATA = (
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
DROPPED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "argocd.argoproj.io/tracking-id",
    "argocd.argoproj.io/installation-id",
)
SECRET_FIELDS = ("data", "stringData")
SECRET_MASK = "(hidden)"
HOOK_ANNOTATION = "argocd.argoproj.io/hook"
WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
HELM_HOOK_ANNOTATION = "helm.sh/hook"
HELM_WEIGHT_ANNOTATION = "helm.sh/hook-weight"
# Argo CD's sync phases in the order a sync runs them (SyncFail only when the sync failed).
PHASES = ("PreSync", "Sync", "PostSync", "SyncFail")
# Helm hooks Argo CD maps onto its own phases (Argo CD docs, "Helm hooks").
HELM_HOOK_PHASES = {
    "pre-install": "PreSync",
    "pre-upgrade": "PreSync",
    "post-install": "PostSync",
    "post-upgrade": "PostSync",
}
# The kind order within a phase and wave (gitops-engine's sync tasks, after Helm's kind sorter);
# kinds not listed (custom resources) come after all of these.
KIND_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
)
_KIND_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}

ADDED, REMOVED, CHANGED = "added", "removed", "changed"

# A ruamel YAML instance keeps its emitter state between calls: two threads dumping through one
# (a worker's thread pool rendering two changes) corrupt each other's output. One per thread.
_local = threading.local()


def block_yaml() -> YAML:
    """This thread's YAML dumper: block style, long strings on one line (a diff line per value)."""
    yaml: YAML | None = getattr(_local, "yaml", None)
    if yaml is None:
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.width = 4096
        _local.yaml = yaml
    return yaml


# ---- identity and canonical form ----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ObjectId:
    """Which object: API group (core: ""), kind, namespace (cluster-scoped: ""), name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


def object_id(obj: Mapping[str, Any], default_namespace: str = "") -> ObjectId:
    """Return the identity of a rendered object (objects without a namespace get the app's)."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or meta.get("generateName") or "")
    return ObjectId(group, str(obj.get("kind") or ""), str(meta.get("namespace") or default_namespace), name)


def is_secret(obj: Mapping[str, Any]) -> bool:
    """Tell whether an object is a core Secret (its values are never shown)."""
    return obj.get("kind") == "Secret" and "/" not in str(obj.get("apiVersion") or "v1")


def redact_secrets(obj: dict[str, Any]) -> dict[str, Any]:
    """Return `obj` with a core Secret's data/stringData values replaced by a mask (keys kept)."""
    if not is_secret(obj):
        return obj
    out = dict(obj)
    for name in SECRET_FIELDS:
        values = obj.get(name)
        if isinstance(values, dict):
            out[name] = dict.fromkeys(values, SECRET_MASK)
    return out


def canonical(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy without `status`, server-set metadata and tracking annotations (Secrets masked)."""
    out = {k: _sorted(v) for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for key in SERVER_SET_METADATA:
        meta.pop(key, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in DROPPED_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if meta:
        out["metadata"] = meta
    return _sorted(redact_secrets(out))  # type: ignore[no-any-return]


def canonical_yaml(obj: Mapping[str, Any]) -> str:
    """Return an object as stable YAML: keys sorted, block style, one value per line."""
    stream = io.StringIO()
    block_yaml().dump(canonical(obj), stream)
    return stream.getvalue()


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


# ---- object-level diff ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectChange:
    """One object the change adds, removes or alters; `diff` is "" for Secrets (keys only)."""

    id: ObjectId
    change: str  # added | removed | changed
    diff: str = ""
    secret_keys: tuple[str, ...] = ()  # Secrets: "data.password added" / "… removed" / "… changed"

    @property
    def is_secret(self) -> bool:
        return self.id.kind == "Secret" and self.id.group == ""

    @property
    def diff_line_count(self) -> int:
        return self.diff.count("\n")

    @property
    def diff_rows(self) -> list[tuple[str, str]]:
        """The unified diff classified for a page's `diff` block."""
        return classify_diff(self.diff)


@dataclass(frozen=True)
class KindCount:
    kind: str
    added: int
    removed: int
    changed: int

    @property
    def total(self) -> int:
        return self.added + self.removed + self.changed


@dataclass(frozen=True)
class ObjectDiff:
    """Objects added, removed and changed between two renderings; `unchanged` counts the rest."""

    changes: tuple[ObjectChange, ...]
    unchanged: int = 0

    def _of(self, change: str) -> list[ObjectChange]:
        return [c for c in self.changes if c.change == change]

    @property
    def added(self) -> list[ObjectChange]:
        return self._of(ADDED)

    @property
    def removed(self) -> list[ObjectChange]:
        return self._of(REMOVED)

    @property
    def changed(self) -> list[ObjectChange]:
        return self._of(CHANGED)

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def by_kind(self) -> list[KindCount]:
        """Counts per kind (kinds sorted by name)."""
        counts: dict[str, Counter[str]] = {}
        for c in self.changes:
            counts.setdefault(c.id.kind, Counter())[c.change] += 1
        return [KindCount(kind, n[ADDED], n[REMOVED], n[CHANGED]) for kind, n in sorted(counts.items())]

    def status_of(self, oid: ObjectId) -> str:
        return next((c.change for c in self.changes if c.id == oid), "")


def object_diff(
    before: Iterable[Mapping[str, Any]],
    after: Iterable[Mapping[str, Any]],
    *,
    namespace: str = "",
    before_label: str = "before",
    after_label: str = "after",
) -> ObjectDiff:
    """Compare two renderings object by object (canonical YAML); Secrets by key names only."""
    old = _index(before, namespace)
    new = _index(after, namespace)
    changes: list[ObjectChange] = []
    unchanged = 0
    for oid in sorted(old.keys() | new.keys()):
        a, b = old.get(oid), new.get(oid)
        if a is None and b is not None:
            changes.append(_one_sided(oid, ADDED, b, after_label))
        elif b is None and a is not None:
            changes.append(_one_sided(oid, REMOVED, a, before_label))
        elif a is not None and b is not None:
            change = _compare(oid, a, b, before_label, after_label)
            if change is None:
                unchanged += 1
            else:
                changes.append(change)
    return ObjectDiff(tuple(changes), unchanged)


def _index(objects: Iterable[Mapping[str, Any]], namespace: str) -> dict[ObjectId, Mapping[str, Any]]:
    out: dict[ObjectId, Mapping[str, Any]] = {}
    for obj in objects:
        if isinstance(obj, Mapping) and obj.get("kind"):
            out[object_id(obj, namespace)] = obj
    return out


def _label(side: str, oid: ObjectId) -> str:
    return f"{side}/{oid}"


def _one_sided(oid: ObjectId, change: str, obj: Mapping[str, Any], side: str) -> ObjectChange:
    if is_secret(obj):
        keys = tuple(f"{f}.{k} {change}" for f in SECRET_FIELDS for k in sorted(obj.get(f) or {}))
        return ObjectChange(oid, change, "", keys)
    text = canonical_yaml(obj)
    if change == ADDED:
        diff = diff_text("", text, old_label="/dev/null", new_label=_label(side, oid))
    else:
        diff = diff_text(text, "", old_label=_label(side, oid), new_label="/dev/null")
    return ObjectChange(oid, change, diff)


def _compare(
    oid: ObjectId, a: Mapping[str, Any], b: Mapping[str, Any], before_label: str, after_label: str
) -> ObjectChange | None:
    if is_secret(a) or is_secret(b):
        keys = _secret_key_changes(a, b)
        # Everything but the values (labels, annotations, type) still counts as a change.
        rest = canonical_yaml(a) != canonical_yaml(b)
        if not keys and not rest:
            return None
        return ObjectChange(oid, CHANGED, "", keys or ("metadata or type changed; no key changed",))
    old_text, new_text = canonical_yaml(a), canonical_yaml(b)
    if old_text == new_text:
        return None
    diff = diff_text(
        old_text, new_text, old_label=_label(before_label, oid), new_label=_label(after_label, oid)
    )
    return ObjectChange(oid, CHANGED, diff)


def _secret_key_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, ...]:
    """Name the Secret keys added, removed or changed; never a value.

    Argo CD masks Secret values per answer ("+" runs, equal values equal masks), so a value change
    shows only when the masks differ; keys added and removed always show.
    """
    out: list[str] = []
    for f in SECRET_FIELDS:
        old, new = a.get(f) or {}, b.get(f) or {}
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            continue
        for key in sorted(set(old) | set(new), key=str):
            if key not in old:
                out.append(f"{f}.{key} added")
            elif key not in new:
                out.append(f"{f}.{key} removed")
            elif old[key] != new[key]:
                out.append(f"{f}.{key} changed")
    return tuple(out)


# ---- sync order: phases, waves, hooks -----------------------------------------------------------------


@dataclass(frozen=True)
class SyncStep:
    """One object applied (or one hook run) by the sync, in its phase and wave."""

    id: ObjectId
    phase: str
    wave: int
    hook: bool
    change: str = ""  # added | changed | "" (unchanged)


@dataclass(frozen=True)
class WaveGroup:
    phase: str
    wave: int
    steps: tuple[SyncStep, ...]

    @property
    def changed(self) -> bool:
        return any(s.change for s in self.steps)


@dataclass(frozen=True)
class SyncPlan:
    """The order Argo CD will apply the new revision in, and what deserves a callout."""

    steps: tuple[SyncStep, ...]
    skipped: tuple[ObjectId, ...] = ()  # hook "Skip" and delete hooks: not applied by a sync
    callouts: tuple[str, ...] = ()

    @property
    def groups(self) -> list[WaveGroup]:
        out: list[WaveGroup] = []
        for step in self.steps:
            if out and (out[-1].phase, out[-1].wave) == (step.phase, step.wave):
                last = out[-1]
                out[-1] = WaveGroup(last.phase, last.wave, (*last.steps, step))
            else:
                out.append(WaveGroup(step.phase, step.wave, (step,)))
        return out

    @property
    def multi_step(self) -> bool:
        return len(self.groups) > 1


def sync_phases(obj: Mapping[str, Any]) -> tuple[list[str], bool]:
    """Return (the phases an object takes part in, whether it is a hook); [] when a sync skips it."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(HOOK_ANNOTATION)
    if raw is None and annotations.get(HELM_HOOK_ANNOTATION):
        mapped = [HELM_HOOK_PHASES.get(h.strip()) for h in str(annotations[HELM_HOOK_ANNOTATION]).split(",")]
        phases = [p for p in dict.fromkeys(mapped) if p]
        return phases, True
    if raw is None:
        return ["Sync"], False
    wanted = [h.strip() for h in str(raw).split(",") if h.strip()]
    return [p for p in PHASES if p in wanted], True


def sync_wave(obj: Mapping[str, Any]) -> int:
    """Return the object's sync wave (annotation, or Helm's hook weight; default 0)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(WAVE_ANNOTATION)
    if raw is None and HOOK_ANNOTATION not in annotations:
        raw = annotations.get(HELM_WEIGHT_ANNOTATION)
    try:
        return int(str(raw).strip()) if raw is not None else 0
    except ValueError:
        return 0


def _order_key(step: SyncStep) -> tuple[int, int, int, str]:
    return (PHASES.index(step.phase), step.wave, _KIND_RANK.get(step.id.kind, len(KIND_ORDER)), step.id.name)


def sync_plan(
    after: Iterable[Mapping[str, Any]],
    diff: ObjectDiff | None = None,
    *,
    namespace: str = "",
    before: Iterable[Mapping[str, Any]] = (),
) -> SyncPlan:
    """Order the new revision's objects as Argo CD syncs them; mark changes; call out PreSync hooks."""
    steps: list[SyncStep] = []
    skipped: list[ObjectId] = []
    callouts: list[str] = []
    before_phases = {object_id(o, namespace): sync_phases(o)[0] for o in before if o.get("kind")}
    for obj in after:
        if not obj.get("kind"):
            continue
        oid = object_id(obj, namespace)
        phases, hook = sync_phases(obj)
        change = diff.status_of(oid) if diff else ""
        if not phases:
            skipped.append(oid)
            continue
        wave = sync_wave(obj)
        steps.extend(SyncStep(oid, phase, wave, hook, change) for phase in phases)
        if hook and "PreSync" in phases and (change or "PreSync" not in before_phases.get(oid, [])) and diff:
            verb = "adds" if change == ADDED or oid not in before_phases else "alters"
            callouts.append(
                f"This change {verb} the PreSync hook {oid}: it runs before anything else is applied, "
                "and the sync stops if it fails."
            )
    steps.sort(key=_order_key)
    return SyncPlan(tuple(steps), tuple(skipped), tuple(callouts))
