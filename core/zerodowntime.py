"""The zero-downtime checklist (blueprint "Featured snippet") as pure rules over Kubernetes objects.

Each rule takes the objects one revision renders (plain dicts, as Argo CD's manifests endpoint
returns them) and returns findings for the workloads among them: Deployments and StatefulSets
(apps/v1) and Argo Rollouts (argoproj.io). Nothing here reads Git, Argo CD or the database: the
portal evaluates the objects Argo CD rendered at the new revision (changes.checklist), and the
inventory's configuration validates environments' `checklist:` modes against `CHECKS`.

Kubernetes semantics followed (https://kubernetes.io/docs/concepts/workloads/ and
https://kubernetes.io/docs/tasks/run-application/configure-pdb/):
- `spec.replicas` defaults to 1; a HorizontalPodAutoscaler targeting the workload makes its
  `minReplicas` the count to plan for.
- Deployment `strategy` defaults to RollingUpdate with maxSurge 25% (rounded up) and
  maxUnavailable 25% (rounded down); when both resolve to 0 the API makes maxUnavailable 1.
- A PodDisruptionBudget selects pods of its own namespace by label selector (an empty selector
  selects every pod); minAvailable / maxUnavailable percentages are rounded up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Rollout")
MODES = ("off", "warn", "block")


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    # Default mode in a production-like environment, and elsewhere.
    production_default: str
    default: str
    doc: str


CHECKS: tuple[Check, ...] = (
    Check(
        "readiness_probe",
        "Readiness probe on every container",
        "block",
        "warn",
        "traffic reaches a pod only once it reports ready",
    ),
    Check(
        "liveness_probe",
        "Liveness probe on every container",
        "block",
        "warn",
        "a hung process is restarted (probe the process, not its dependencies)",
    ),
    Check(
        "pod_disruption_budget",
        "PodDisruptionBudget that still allows a disruption",
        "block",
        "warn",
        "exactly one PDB selects the pods, at least 2 replicas, and the PDB lets a node drain evict one",
    ),
    Check(
        "resources",
        "Resource requests and limits",
        "block",
        "warn",
        "cpu and memory requests and a memory limit on every container",
    ),
    Check(
        "image_pinned",
        "Images pinned to a tag or digest",
        "block",
        "warn",
        "no image without a tag or with the tag `latest` (a digest always pins)",
    ),
    Check(
        "rolling_update",
        "Rollout never drops below the replica count",
        "block",
        "warn",
        "RollingUpdate whose maxUnavailable resolves to 0 (StatefulSet: one pod at a time, 2+ "
        "replicas), or an Argo Rollouts canary / blueGreen strategy",
    ),
    Check(
        "graceful_shutdown",
        "Graceful shutdown (preStop hook and terminationGracePeriodSeconds)",
        "block",
        "off",
        "in-flight requests finish before the container stops",
    ),
    Check(
        "topology_spread",
        "Topology spread or pod anti-affinity",
        "warn",
        "off",
        "replicas spread across failure domains",
    ),
)
CHECK_IDS = tuple(c.id for c in CHECKS)
CHECKS_BY_ID = {c.id: c for c in CHECKS}


def default_modes(*, production_like: bool) -> dict[str, str]:
    """Return each check's default mode for an environment."""
    return {c.id: (c.production_default if production_like else c.default) for c in CHECKS}


def modes_validate(value: Any) -> dict[str, str]:
    """Return a `checklist:` mapping checked, or raise ValueError naming the bad key or value."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of check id to off, warn or block")
    out: dict[str, str] = {}
    for key, mode in value.items():
        if key not in CHECKS_BY_ID:
            raise ValueError(f"unknown check {key!r}; known: {', '.join(CHECK_IDS)}")
        if mode not in MODES:
            raise ValueError(f"{key}: expected one of {', '.join(MODES)}, got {mode!r}")
        out[str(key)] = str(mode)
    return out


@dataclass(frozen=True)
class Finding:
    check: str
    kind: str
    namespace: str
    name: str
    container: str
    message: str

    @property
    def target(self) -> str:
        where = f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
        return f"{where} container {self.container}" if self.container else where

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    check: Check
    findings: tuple[Finding, ...] = ()
    workloads: int = 0

    @property
    def passed(self) -> bool:
        return not self.findings


# ---------------------------------------------------------------------------------------------
# Reading objects


@dataclass(frozen=True)
class Workload:
    kind: str
    namespace: str
    name: str
    replicas: int
    obj: Mapping[str, Any]
    pod: Mapping[str, Any]
    pod_labels: Mapping[str, str]
    containers: tuple[Mapping[str, Any], ...]
    init_containers: tuple[Mapping[str, Any], ...] = field(default=())

    def finding(self, check: str, message: str, container: str = "") -> Finding:
        return Finding(check, self.kind, self.namespace, self.name, container, message)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _meta(obj: Mapping[str, Any], default_namespace: str) -> tuple[str, str]:
    meta = _map(obj.get("metadata"))
    return str(meta.get("namespace") or default_namespace or ""), str(meta.get("name") or "?")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _hpa_min_replicas(
    objects: Sequence[Mapping[str, Any]], kind: str, namespace: str, name: str
) -> int | None:
    for obj in objects:
        if obj.get("kind") != "HorizontalPodAutoscaler" or _meta(obj, namespace)[0] != namespace:
            continue
        spec = _map(obj.get("spec"))
        ref = _map(spec.get("scaleTargetRef"))
        if ref.get("kind") == kind and ref.get("name") == name:
            return _int(spec.get("minReplicas")) or 1
    return None


def workloads(objects: Sequence[Mapping[str, Any]], *, default_namespace: str = "") -> list[Workload]:
    """Return the Deployments, StatefulSets and Rollouts among `objects`, their pod templates read."""
    out: list[Workload] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind not in WORKLOAD_KINDS or not isinstance(obj, Mapping):
            continue
        if kind == "Rollout" and not str(obj.get("apiVersion", "argoproj.io/")).startswith("argoproj.io/"):
            continue
        namespace, name = _meta(obj, default_namespace)
        spec = _map(obj.get("spec"))
        template = _map(spec.get("template"))
        ref = _map(spec.get("workloadRef"))
        if kind == "Rollout" and not template and ref:
            # A Rollout may reference a Deployment's pod template instead of carrying one.
            for other in objects:
                if other.get("kind") == ref.get("kind") and _meta(other, default_namespace) == (
                    namespace,
                    ref.get("name"),
                ):
                    template = _map(_map(other.get("spec")).get("template"))
        pod = _map(template.get("spec"))
        replicas = _int(spec.get("replicas"))
        hpa = _hpa_min_replicas(objects, str(kind), namespace, name)
        count = hpa if hpa is not None else (replicas if replicas is not None else 1)
        out.append(
            Workload(
                kind=str(kind),
                namespace=namespace,
                name=name,
                replicas=count,
                obj=obj,
                pod=pod,
                pod_labels={
                    str(k): str(v) for k, v in _map(_map(template.get("metadata")).get("labels")).items()
                },
                containers=tuple(_map(c) for c in _list(pod.get("containers"))),
                init_containers=tuple(_map(c) for c in _list(pod.get("initContainers"))),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Rules


def check_readiness_probe(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    return _probe(ws, "readiness_probe", "readinessProbe")


def check_liveness_probe(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    return _probe(ws, "liveness_probe", "livenessProbe")


def _probe(ws: Sequence[Workload], check: str, key: str) -> list[Finding]:
    out: list[Finding] = []
    for w in ws:
        if not w.containers:
            out.append(w.finding(check, "no containers in the pod template"))
        for c in w.containers:
            if not _map(c.get(key)):
                out.append(w.finding(check, f"no {key}", str(c.get("name", "?"))))
    return out


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Tell whether a LabelSelector selects `labels` (an empty selector selects everything)."""
    if selector is None:
        return False
    sel = _map(selector)
    for key, value in _map(sel.get("matchLabels")).items():
        if labels.get(str(key)) != str(value):
            return False
    for expr in _list(sel.get("matchExpressions")):
        e = _map(expr)
        key, op, values = str(e.get("key", "")), e.get("operator"), [str(v) for v in _list(e.get("values"))]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def scaled(value: Any, total: int, *, round_up: bool) -> int | None:
    """Resolve an IntOrString (3 or "25%") against `total`, as Kubernetes does; None if malformed."""
    number = _int(value)
    if number is not None:
        return number
    if isinstance(value, str) and re.fullmatch(r"\s*\d+%\s*", value):
        percent = int(value.strip()[:-1])
        exact = total * percent / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return None


def check_pod_disruption_budget(
    objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]
) -> list[Finding]:
    check = "pod_disruption_budget"
    pdbs = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    out: list[Finding] = []
    for w in ws:
        if w.replicas < 2:
            out.append(w.finding(check, f"{w.replicas} replica(s): any disruption takes the service down"))
        selecting = [
            p
            for p in pdbs
            if _meta(p, w.namespace)[0] == w.namespace
            and selector_matches(_map(p.get("spec")).get("selector"), w.pod_labels)
        ]
        if not selecting:
            out.append(w.finding(check, "no PodDisruptionBudget selects its pods"))
            continue
        if len(selecting) > 1:
            names = ", ".join(sorted(_meta(p, w.namespace)[1] for p in selecting))
            out.append(w.finding(check, f"{len(selecting)} PodDisruptionBudgets select its pods ({names}): "
                                        "the eviction API refuses to evict them"))  # fmt: skip
            continue
        pdb = selecting[0]
        pdb_name = _meta(pdb, w.namespace)[1]
        spec = _map(pdb.get("spec"))
        if "minAvailable" in spec:
            need = scaled(spec["minAvailable"], w.replicas, round_up=True)
            if need is None:
                out.append(w.finding(check, f"PodDisruptionBudget {pdb_name}: minAvailable is malformed"))
            elif w.replicas - need < 1 and w.replicas >= 1:
                out.append(
                    w.finding(
                        check,
                        f"PodDisruptionBudget {pdb_name}: minAvailable {spec['minAvailable']} with "
                        f"{w.replicas} replica(s) allows no disruption (node drains block)",
                    )
                )
        elif "maxUnavailable" in spec:
            allowed = scaled(spec["maxUnavailable"], w.replicas, round_up=True)
            if allowed is None:
                out.append(w.finding(check, f"PodDisruptionBudget {pdb_name}: maxUnavailable is malformed"))
            elif allowed < 1:
                out.append(
                    w.finding(
                        check,
                        f"PodDisruptionBudget {pdb_name}: maxUnavailable {spec['maxUnavailable']} with "
                        f"{w.replicas} replica(s) allows no disruption (node drains block)",
                    )
                )
            elif allowed >= w.replicas:
                out.append(
                    w.finding(
                        check,
                        f"PodDisruptionBudget {pdb_name}: maxUnavailable {spec['maxUnavailable']} lets "
                        f"a drain evict all {w.replicas} replica(s)",
                    )
                )
        else:
            out.append(w.finding(check, f"PodDisruptionBudget {pdb_name} sets neither minAvailable nor "
                                        "maxUnavailable"))  # fmt: skip
    return out


def check_resources(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    out: list[Finding] = []
    for w in ws:
        for c in w.containers:
            res = _map(c.get("resources"))
            requests, limits = _map(res.get("requests")), _map(res.get("limits"))
            missing = [f"requests.{k}" for k in ("cpu", "memory") if not requests.get(k)]
            if not limits.get("memory"):
                missing.append("limits.memory")
            if missing:
                out.append(w.finding("resources", "no " + ", ".join(missing), str(c.get("name", "?"))))
    return out


def image_version(image: str) -> tuple[str, str]:
    """Split an image reference into (tag, digest); both may be empty."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return tag, digest


def check_image_pinned(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    out: list[Finding] = []
    for w in ws:
        for c in (*w.init_containers, *w.containers):
            image = str(c.get("image") or "")
            name = str(c.get("name", "?"))
            tag, digest = image_version(image)
            if not image:
                out.append(w.finding("image_pinned", "no image", name))
            elif digest:
                continue
            elif not tag:
                out.append(w.finding("image_pinned", f"image {image} has no tag (means latest)", name))
            elif tag == "latest":
                out.append(w.finding("image_pinned", f"image {image} uses the tag latest", name))
    return out


def check_rolling_update(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    check = "rolling_update"
    out: list[Finding] = []
    for w in ws:
        spec = _map(w.obj.get("spec"))
        if w.kind == "Rollout":
            strategy = _map(spec.get("strategy"))
            if not (_map(strategy.get("canary")) or _map(strategy.get("blueGreen")) or "canary" in strategy
                    or "blueGreen" in strategy):  # fmt: skip
                out.append(w.finding(check, "the Rollout declares neither a canary nor a blueGreen strategy"))
            continue
        if w.kind == "StatefulSet":
            strategy = _map(spec.get("updateStrategy"))
            kind = strategy.get("type") or "RollingUpdate"
            if kind != "RollingUpdate":
                continue  # OnDelete: pods are replaced by hand, never by a sync
            unavailable = scaled(_map(strategy.get("rollingUpdate")).get("maxUnavailable", 1), w.replicas,
                                 round_up=False)  # fmt: skip
            if unavailable is None or unavailable > 1:
                out.append(
                    w.finding(check, f"rollingUpdate.maxUnavailable resolves to {unavailable} pods at once")
                )
            elif w.replicas < 2:
                out.append(w.finding(check, "a StatefulSet with 1 replica is down while its pod is replaced"))
            continue
        strategy = _map(spec.get("strategy"))
        kind = strategy.get("type") or "RollingUpdate"
        if kind == "Recreate":
            out.append(w.finding(check, "strategy Recreate stops every pod before starting new ones"))
            continue
        rolling = _map(strategy.get("rollingUpdate"))
        raw_unavailable = rolling.get("maxUnavailable", "25%")
        raw_surge = rolling.get("maxSurge", "25%")
        unavailable = scaled(raw_unavailable, w.replicas, round_up=False)
        surge = scaled(raw_surge, w.replicas, round_up=True)
        if unavailable is None or surge is None:
            out.append(w.finding(check, "rollingUpdate.maxUnavailable or maxSurge is malformed"))
            continue
        if unavailable == 0 and surge == 0:
            unavailable = 1  # the API server's rule: a rollout must be able to make progress
            out.append(w.finding(check, "maxSurge and maxUnavailable both resolve to 0: Kubernetes takes one "
                                        "pod down at a time"))  # fmt: skip
        elif unavailable > 0:
            given = "default 25%" if "maxUnavailable" not in rolling else f"{raw_unavailable}"
            out.append(
                w.finding(
                    check,
                    f"maxUnavailable {given} of {w.replicas} replica(s) takes {unavailable} pod(s) down "
                    "during the rollout; set maxUnavailable: 0",
                )
            )
    return out


def check_graceful_shutdown(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    out: list[Finding] = []
    for w in ws:
        grace = _int(w.pod.get("terminationGracePeriodSeconds"))
        if grace is None:
            out.append(w.finding("graceful_shutdown", "terminationGracePeriodSeconds is not set"))
        elif grace <= 0:
            out.append(w.finding("graceful_shutdown", f"terminationGracePeriodSeconds is {grace}"))
        for c in w.containers:
            if not _map(_map(c.get("lifecycle")).get("preStop")):
                out.append(
                    w.finding("graceful_shutdown", "no lifecycle.preStop hook", str(c.get("name", "?")))
                )
    return out


def check_topology_spread(objects: Sequence[Mapping[str, Any]], ws: Sequence[Workload]) -> list[Finding]:
    out: list[Finding] = []
    for w in ws:
        spread = _list(w.pod.get("topologySpreadConstraints"))
        anti = _map(_map(w.pod.get("affinity")).get("podAntiAffinity"))
        if not spread and not anti:
            out.append(w.finding("topology_spread", "neither topologySpreadConstraints nor podAntiAffinity"))
    return out


Rule = Callable[[Sequence[Mapping[str, Any]], Sequence[Workload]], list[Finding]]
RULES: dict[str, Rule] = {
    "readiness_probe": check_readiness_probe,
    "liveness_probe": check_liveness_probe,
    "pod_disruption_budget": check_pod_disruption_budget,
    "resources": check_resources,
    "image_pinned": check_image_pinned,
    "rolling_update": check_rolling_update,
    "graceful_shutdown": check_graceful_shutdown,
    "topology_spread": check_topology_spread,
}


def evaluate(
    objects: Iterable[Mapping[str, Any]], *, default_namespace: str = "", only: Iterable[str] | None = None
) -> list[CheckResult]:
    """Run the checklist (or the checks in `only`) on the objects one revision renders."""
    objs = [o for o in objects if isinstance(o, Mapping)]
    ws = workloads(objs, default_namespace=default_namespace)
    wanted = set(only) if only is not None else set(CHECK_IDS)
    return [
        CheckResult(check=c, findings=tuple(RULES[c.id](objs, ws)), workloads=len(ws))
        for c in CHECKS
        if c.id in wanted
    ]
