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

    @property
    def step_label(self) -> str:
        """The step as people read it: "step 2 of 6" (or "" without steps)."""
        if not self.steps or self.current_step is None:
            return ""
        return f"step {min(self.current_step + 1, len(self.steps))} of {len(self.steps)}"

    @property
    def complete(self) -> bool:
        """Whether every canary step has run and the Rollout is not aborted."""
        return not self.aborted and (self.current_step is None or self.current_step >= len(self.steps))


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


def parse_rollout(data: Any, path: str = "$") -> Rollout:
    """Parse a live Rollout object; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    strategy = spec.obj("strategy")
    kind = "canary" if strategy.has("canary") else "blueGreen" if strategy.has("blueGreen") else ""
    steps = tuple(_step_label(s) for s in strategy.obj("canary").objs("steps"))
    canary = status.obj("canary")
    weight = canary.obj("weights").obj("canary").integer("weight")
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


def parse_application_set(data: Any, path: str = "$") -> ApplicationSet:
    """Parse an ApplicationSet; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    strategy = spec.obj("strategy")
    return ApplicationSet(
        name=meta.req_text("name"),
        namespace=meta.text("namespace"),
        uid=meta.text("uid"),
        generators=tuple(k for g in spec.objs("generators") for k in sorted(g.raw_dict())),
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
