"""Argo Rollouts as the emulated cluster runs them: a canary stepping through ``setWeight`` and
``pause`` steps, its live ``Rollout`` object, and the health Argo CD derives from it.

The live object follows Argo Rollouts v1.x (``status.phase``/``message``, ``currentStepIndex``,
``pauseConditions``, ``abort``); health follows Argo CD's Lua rule for ``argoproj.io/Rollout``
(/work/shared/argocd/rollouts/argocd-health/health.lua): phase ``Paused`` maps to ``Suspended``, any
other phase is reported as is, with the Rollout's message.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sandbox.argocd.model import ts

SET_WEIGHT_SECONDS = 2.0  # how long a setWeight step takes to bring its canary pods up
_DURATION_RE = re.compile(r"^(\d+)(s|m|h)?$")


def parse_duration(value: Any) -> float | None:
    """A pause step's duration (``10``, ``"10s"``, ``"1m"``, ``"1h"``); None = indefinite."""
    if value is None or value == "":
        return None
    m = _DURATION_RE.match(str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def pod_hash(template: Any) -> str:
    """A stand-in for the pod-template-hash: stable for the same template, new for a changed one."""
    return hashlib.sha256(repr(template).encode()).hexdigest()[:10]


@dataclass
class RolloutState:
    """One Rollout's progress. ``step_index == len(steps)`` means the update is complete."""

    steps: list[dict[str, Any]]
    revision: int
    current_hash: str
    stable_hash: str
    images: list[str]
    stable_images: list[str]
    step_index: int = 0
    step_started: float = 0.0
    aborted: bool = False
    aborted_at: float | None = None
    manual_pause: bool = False  # a ``pause: {}`` step: waits for promote/resume
    generation: int = 1
    updated_at: float = 0.0
    time_scale: float = 1.0
    history: list[str] = field(default_factory=list)

    @classmethod
    def completed(
        cls, steps: list[dict[str, Any]], template: Any, images: list[str], revision: int, now: float
    ) -> RolloutState:
        h = pod_hash(template)
        return cls(
            steps=steps,
            revision=revision,
            current_hash=h,
            stable_hash=h,
            images=images,
            stable_images=images,
            step_index=len(steps),
            step_started=now,
            updated_at=now,
        )

    def update(self, steps: list[dict[str, Any]], template: Any, images: list[str], now: float) -> bool:
        """A synced spec: a new pod template starts a canary at step 0; True when one started."""
        h = pod_hash(template)
        self.steps = steps
        self.generation += 1
        if h == self.current_hash and not self.aborted:
            return False
        if h == self.stable_hash:
            # Back to the stable template (a rollback): Argo Rollouts switches at once, no steps.
            self.current_hash, self.images = h, images
            self.step_index, self.aborted, self.aborted_at = len(steps), False, None
            self.updated_at = now
            return False
        if self.complete and not self.aborted:
            self.stable_hash, self.stable_images = self.current_hash, self.images
        self.revision += 1
        self.current_hash, self.images = h, images
        self.step_index, self.step_started = 0, now
        self.aborted, self.aborted_at, self.manual_pause = False, None, False
        self.updated_at = now
        self._enter_step(now)
        return True

    # ---- progress ---------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.step_index >= len(self.steps)

    @property
    def paused(self) -> bool:
        return not self.aborted and not self.complete and "pause" in self.steps[self.step_index]

    def step_end(self) -> float | None:
        """When the current step ends by itself (None: it does not, or nothing is running)."""
        if self.aborted or self.complete:
            return None
        step = self.steps[self.step_index]
        if "pause" in step:
            duration = parse_duration((step.get("pause") or {}).get("duration"))
            if duration is None:
                return None
            return self.step_started + duration * self.time_scale
        return self.step_started + SET_WEIGHT_SECONDS * self.time_scale

    def advance(self, now: float) -> bool:
        """Move through every step that has ended by ``now``; True when something changed."""
        changed = False
        while (end := self.step_end()) is not None and now >= end:
            self.step_index += 1
            self.step_started = end
            self._enter_step(end)
            changed = True
        if changed:
            self.updated_at = now
            if self.complete:
                self.stable_hash, self.stable_images = self.current_hash, self.images
        return changed

    def _enter_step(self, now: float) -> None:
        self.manual_pause = self.paused and self.step_end() is None

    def abort(self, now: float) -> bool:
        if self.complete or self.aborted:
            return False
        self.aborted, self.aborted_at, self.updated_at = True, now, now
        return True

    def resume(self, now: float) -> bool:
        """Leave a pause step (Argo Rollouts' ``resume``/``promote`` of the current step)."""
        if not self.paused:
            return False
        self.step_index += 1
        self.step_started, self.updated_at = now, now
        self._enter_step(now)
        if self.complete:
            self.stable_hash, self.stable_images = self.current_hash, self.images
        return True

    def promote_full(self, now: float) -> bool:
        if self.complete and not self.aborted:
            return False
        self.step_index, self.aborted, self.aborted_at = len(self.steps), False, None
        self.stable_hash, self.stable_images = self.current_hash, self.images
        self.updated_at = now
        return True

    def retry(self, now: float) -> bool:
        if not self.aborted:
            return False
        self.aborted, self.aborted_at = False, None
        self.step_index, self.step_started, self.updated_at = 0, now, now
        self._enter_step(now)
        return True

    # ---- what the cluster shows ---------------------------------------------------------------------
    def weight(self) -> int:
        if self.aborted:
            return 0
        if self.complete:
            return 100
        weight = 0
        for step in self.steps[: self.step_index + 1]:
            if "setWeight" in step:
                weight = int(step["setWeight"])
        return weight

    def phase(self) -> tuple[str, str]:
        """Argo Rollouts' ``status.phase`` and ``status.message``."""
        if self.aborted:
            return "Degraded", f"RolloutAborted: Rollout aborted update to revision {self.revision}"
        if self.complete:
            return "Healthy", ""
        if self.paused:
            return "Paused", "CanaryPauseStep"
        return "Progressing", "more replicas need to be updated"

    def health(self) -> tuple[str, str]:
        """Argo CD's health of the Rollout (its Lua rule: ``Paused`` is ``Suspended``)."""
        phase, message = self.phase()
        return ("Suspended" if phase == "Paused" else phase), message

    def next_wake(self) -> float | None:
        return self.step_end()

    def live(
        self, rendered: dict[str, Any], *, uid: str, created: float, resource_version: int
    ) -> dict[str, Any]:
        """The live Rollout: the rendered spec plus the metadata and status the controller writes."""
        obj = dict(rendered)
        meta = dict(obj.get("metadata") or {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            "rollout.argoproj.io/revision": str(self.revision),
        }
        meta.update(
            {
                "uid": uid,
                "generation": self.generation,
                "resourceVersion": str(resource_version),
                "creationTimestamp": ts(created),
            }
        )
        obj["metadata"] = meta
        spec = obj.get("spec") or {}
        replicas = int(spec.get("replicas") or 1)
        weight = self.weight()
        updated = replicas if self.complete and not self.aborted else math.ceil(replicas * weight / 100)
        stable = 0 if (self.complete and not self.aborted) else replicas
        total = updated + stable if self.current_hash != self.stable_hash else replicas
        phase, message = self.phase()
        selector = ",".join(
            f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())
        )
        status: dict[str, Any] = {
            "HPAReplicas": total,
            "availableReplicas": total,
            "readyReplicas": total,
            "replicas": total,
            "updatedReplicas": updated,
            "blueGreen": {},
            "canary": {
                "weights": {
                    "canary": {"podTemplateHash": self.current_hash, "weight": weight},
                    "stable": {"podTemplateHash": self.stable_hash, "weight": 100 - weight},
                }
            },
            "conditions": self._conditions(),
            "currentPodHash": self.current_hash,
            "currentStepHash": pod_hash(self.steps)[:8],
            "observedGeneration": str(self.generation),
            "phase": phase,
            "message": message,
            "selector": selector,
            "stableRS": self.stable_hash,
        }
        if self.steps:
            status["currentStepIndex"] = min(self.step_index, len(self.steps))
        if self.paused:
            status["controllerPause"] = True
            status["pauseConditions"] = [{"reason": "CanaryPauseStep", "startTime": ts(self.step_started)}]
        if self.aborted:
            status["abort"] = True
            status["abortedAt"] = ts(self.aborted_at or self.updated_at)
            status["currentStepIndex"] = 0
        obj["status"] = status
        return obj

    def _conditions(self) -> list[dict[str, Any]]:
        stamp = ts(self.updated_at)

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            return {
                "lastTransitionTime": stamp,
                "lastUpdateTime": stamp,
                "message": message,
                "reason": reason,
                "status": status,
                "type": kind,
            }

        out = [cond("Available", "True", "AvailableReason", "Rollout has minimum availability")]
        if self.aborted:
            out.append(
                cond(
                    "Progressing",
                    "False",
                    "RolloutAborted",
                    f"Rollout aborted update to revision {self.revision}",
                )
            )
        elif self.paused:
            out.append(cond("Paused", "True", "RolloutPaused", "Rollout is paused"))
            out.append(cond("Progressing", "Unknown", "RolloutPaused", "Rollout is paused"))
        elif self.complete:
            out.append(cond("Completed", "True", "RolloutCompleted", "Rollout completed update to revision"))
            out.append(
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    "Rollout has completed update to revision",
                )
            )
        else:
            out.append(cond("Progressing", "True", "ReplicaSetUpdated", "Rollout is progressing"))
        return out
