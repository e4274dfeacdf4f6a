"""Typed Argo Rollouts and ApplicationSet objects as Argo CD's API returns them, and their parsers.

The ArgoCDClient methods `rollout`, `list_application_sets` and `application_owner_set` fetch these; this module holds only
the shapes and the parsing (it imports no client, so it survives the client's move).
References: Argo Rollouts' Rollout status (https://argoproj.github.io/argo-rollouts/features/specification/),
Argo CD's ApplicationSet progressive syncs
(https://argo-cd.readthedocs.io/en/stable/operator-manual/applicationset/Progressive-Syncs/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from integrations.http import JsonReader, ParseError

ROLLOUT_GROUP, ROLLOUT_KIND, ROLLOUT_VERSION = "argoproj.io", "Rollout", "v1alpha1"


@dataclass(frozen=True)
class Rollout:
    """An Argo Rollouts `Rollout`'s progress: strategy, step i of n, weight, paused or aborted."""

    name: str
    namespace: str
    strategy: str  # "canary", "blueGreen" or "" (unknown)
    steps: tuple[str, ...]  # each canary step in words: "setWeight 20", "pause 5s", "pause (until resumed)"
    current_step: int | None  # status.currentStepIndex; equals len(steps) when complete
    weight: int | None  # the canary weight now (status.canary.weights.canary.weight)
    phase: str  # Progressing, Paused, Healthy, Degraded
    message: str
    paused: bool
    aborted: bool
    analysis_runs: tuple[
        str, ...
    ]  # status.canary.currentStepAnalysisRunStatus / currentBackgroundAnalysisRunStatus
    # Argo CD's health of the Rollout (`rollout_health`: its Lua rule), what the app's health sums up.
    health: str = ""
    health_message: str = ""

    @property
    def step_label(self) -> str:
        """The step as people read it: "step 2 of 6" (or "" without steps)."""
        if not self.steps or self.current_step is None:
            return ""
        return f"step {min(self.current_step + 1, len(self.steps))} of {len(self.steps)}"

    @property
    def complete(self) -> bool:
        """Whether the update is done: Argo CD calls the Rollout Healthy (every step ran, the new
        ReplicaSet is stable and available, old replicas are gone)."""
        return self.health == "Healthy"

    @property
    def health_badge(self) -> str:
        """The badge colour of the health (the words are shown beside it, never colour alone)."""
        return {"Healthy": "badge-ok", "Degraded": "badge-bad", "Suspended": "badge-warn"}.get(
            self.health, "badge-info"
        )


def _step_label(step: JsonReader) -> str:
    if step.has("setWeight"):
        return f"setWeight {step.integer('setWeight')}"
    if step.has("pause"):
        duration = step.obj("pause").raw("duration")
        return f"pause {duration}" if duration not in (None, "") else "pause (until resumed)"
    for key in ("analysis", "experiment", "setCanaryScale", "setHeaderRoute", "setMirrorRoute", "plugin"):
        if step.has(key):
            return key
    return "step"


def _number(value: Any) -> float | None:
    """Lua's `tonumber` on a field: a number or a numeric string, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def rollout_health(obj: Any) -> tuple[str, str]:
    """Return Argo CD's health `(status, message)` of a live Rollout object.

    A port of Argo CD 3.6's Lua rule for argoproj.io/Rollout
    (resource_customizations/argoproj.io/Rollout/health.lua, in /work/shared/argocd/rollouts/):
    the spec generation must be observed; Rollouts v1.x report `status.phase` (Paused is
    Suspended) with their message; older ones are judged by conditions, pauses and replicas.
    """
    status, spec, meta = _get(obj, "status"), _get(obj, "spec") or {}, _get(obj, "metadata") or {}
    progressing = "Progressing"
    if not isinstance(status, dict):
        return progressing, "Waiting for rollout spec update to be observed"
    observed, generation = _number(status.get("observedGeneration")), _number(meta.get("generation"))
    # No number (a v0.9 Rollout's hash) or a larger one: observed, as the Lua rule says.
    generation_seen = observed is None or generation is None or observed >= generation
    annotations = meta.get("annotations")
    workload_seen = (
        spec.get("workloadRef") is None
        or annotations is None
        or _number(annotations.get("rollout.argoproj.io/workload-generation"))
        == _number(status.get("workloadObservedGeneration"))
    )
    if not generation_seen or not workload_seen:
        return progressing, "Waiting for rollout spec update to be observed"
    if status.get("phase") is not None:
        phase = str(status["phase"])
        return ("Suspended" if phase == "Paused" else phase), str(status.get("message") or "")
    for condition in status.get("conditions") or []:
        kind, reason = _get(condition, "type"), _get(condition, "reason")
        if kind == "InvalidSpec" or (
            kind == "Progressing" and reason in ("RolloutAborted", "ProgressDeadlineExceeded")
        ):
            return "Degraded", str(_get(condition, "message") or "")
    if status.get("pauseConditions") or spec.get("paused"):
        return "Suspended", "Rollout is paused"
    current = status.get("currentPodHash")
    if current is None:
        return progressing, "Waiting for rollout to finish: status has not been reconciled."
    desired = _number(spec.get("replicas"))
    desired = 1 if desired is None else desired
    replicas = _number(status.get("replicas")) or 0
    updated = _number(status.get("updatedReplicas")) or 0
    available = _number(status.get("availableReplicas")) or 0
    if updated < desired:
        return progressing, "Waiting for roll out to finish: More replicas need to be updated"
    if available < updated:
        return progressing, "Waiting for roll out to finish: updated replicas are still becoming available"
    stable = status.get("stableRS")
    if stable is None:
        stable = _get(status, "canary", "stableRS") or ""
    strategy = spec.get("strategy") or {}
    if strategy.get("blueGreen") is not None:
        if _get(status, "blueGreen", "activeSelector") != current:
            return progressing, "active service cutover pending"
        if stable != "" and stable != current:
            return progressing, "waiting for analysis to complete"
    elif strategy.get("canary") is not None:
        if replicas > updated:
            return progressing, "Waiting for roll out to finish: old replicas are pending termination"
        if stable == "" or stable != current:
            return progressing, "Waiting for rollout to finish steps"
    return "Healthy", ""


def parse_rollout(data: Any, path: str = "$") -> Rollout:
    """Parse a live Rollout object; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    strategy = spec.obj("strategy")
    kind = "canary" if strategy.has("canary") else "blueGreen" if strategy.has("blueGreen") else ""
    steps = tuple(_step_label(s) for s in strategy.obj("canary").objs("steps"))
    canary = status.obj("canary")
    weight = canary.obj("weights").obj("canary").integer("weight")
    health, health_message = rollout_health(data)
    runs = tuple(
        f"{key}: {run.text('name')} ({run.text('status') or 'unknown'})"
        for key, run in (
            ("step", canary.opt_obj("currentStepAnalysisRunStatus")),
            ("background", canary.opt_obj("currentBackgroundAnalysisRunStatus")),
        )
        if run is not None
    )
    return Rollout(
        name=meta.req_text("name"),
        namespace=meta.text("namespace"),
        strategy=kind,
        steps=steps,
        current_step=status.integer("currentStepIndex"),
        weight=weight,
        phase=status.text("phase"),
        message=status.text("message"),
        paused=status.flag("controllerPause") or bool(status.objs("pauseConditions")) or spec.flag("paused"),
        aborted=status.flag("abort"),
        analysis_runs=runs,
        health=health,
        health_message=health_message,
    )


def parse_resource_manifest(data: Any) -> Any:
    """Decode `applicationApplicationResourceResponse.manifest` (a JSON string) into the live object."""
    manifest = JsonReader(data).req_text("manifest")
    try:
        return json.loads(manifest)
    except ValueError:
        raise ParseError("$.manifest: not a JSON object") from None


@dataclass(frozen=True)
class AppSetApplicationStatus:
    """One entry of an ApplicationSet's status.applicationStatus (progressive sync)."""

    application: str
    step: str
    status: str  # Waiting, Pending, Progressing, Healthy
    message: str


@dataclass(frozen=True)
class ApplicationSet:
    """An ApplicationSet: its generators, its strategy and the Applications it made."""

    name: str
    namespace: str
    uid: str
    generators: tuple[str, ...]  # generator kinds: "clusters", "git", "list", "matrix", ...
    strategy: str  # "" (all at once) or "RollingSync"
    steps: tuple[str, ...]  # RollingSync steps in words: "env In [dev]"
    applications: tuple[str, ...]  # from status.resources
    application_status: tuple[AppSetApplicationStatus, ...]


def _expressions(step: JsonReader) -> str:
    parts = [
        f"{e.text('key')} {e.text('operator')} [{', '.join(e.strs('values'))}]"
        for e in step.objs("matchExpressions")
    ]
    return " and ".join(parts) or "everything"


def _generator_names(generators: list[JsonReader]) -> tuple[str, ...]:
    """Name each generator by its kind; matrix and merge with their nested generators. A `selector`
    beside a generator filters its results and is no generator (ApplicationSetGenerator)."""
    names = []
    for generator in generators:
        for kind in sorted(k for k in generator.raw_dict() if k != "selector"):
            nested = generator.obj(kind).objs("generators") if kind in ("matrix", "merge") else []
            names.append(f"{kind}({', '.join(_generator_names(nested))})" if nested else kind)
    return tuple(names)


def parse_application_set(data: Any, path: str = "$") -> ApplicationSet:
    """Parse an ApplicationSet; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    strategy = spec.obj("strategy")
    return ApplicationSet(
        name=meta.req_text("name"),
        namespace=meta.text("namespace"),
        uid=meta.text("uid"),
        generators=_generator_names(spec.objs("generators")),
        strategy=strategy.text("type"),
        steps=tuple(_expressions(s) for s in strategy.obj("rollingSync").objs("steps")),
        applications=tuple(
            res.text("name") for res in status.objs("resources") if res.text("kind") == "Application"
        ),
        application_status=tuple(
            AppSetApplicationStatus(
                application=s.text("application"),
                step=s.text("step"),
                status=s.text("status"),
                message=s.text("message"),
            )
            for s in status.objs("applicationStatus")
        ),
    )


def parse_application_set_list(data: Any) -> tuple[ApplicationSet, ...]:
    """Parse an ApplicationSetList."""
    return tuple(parse_application_set(i.raw_dict(), i.path) for i in JsonReader(data).objs("items"))


def owner_application_set(data: Any) -> tuple[str, str] | None:
    """Return `(name, uid)` of the ApplicationSet owning an Application object (ownerReferences)."""
    for ref in JsonReader(data).obj("metadata").objs("ownerReferences"):
        if ref.text("kind") == "ApplicationSet":
            return ref.text("name"), ref.text("uid")
    return None
