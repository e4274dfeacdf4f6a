"""Argo Rollouts and ApplicationSets as the portal reads them (integrations/argocd/resources.py).

A Rollout's health: the portal computes it by Argo CD's own Lua rule.

The table is Argo CD 3.6's health_test.yaml for argoproj.io/Rollout, the objects its testdata/
(shared/argocd/rollouts/argocd-health/); the real Rollouts beside them (Argo Rollouts' own
testdata) are parsed into what the pages show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from integrations.argocd.resources import parse_application_set, parse_rollout, rollout_health
from tests.shared_paths import SHARED

ROLLOUTS = SHARED / "argocd" / "rollouts"
HEALTH = ROLLOUTS / "argocd-health"


def _cases() -> list[Any]:
    table = yaml.safe_load((HEALTH / "health_test.yaml").read_text())["tests"]
    return [pytest.param(case["inputPath"], case["healthStatus"], id=case["inputPath"]) for case in table]


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(("input_path", "expected"), _cases())
def test_rollout_health_follows_argo_cds_lua_rule(input_path: str, expected: dict[str, str]) -> None:
    obj = _load(HEALTH / input_path)
    status, message = rollout_health(obj)
    assert status == expected["status"]
    if "message" in expected:
        assert message == expected["message"]


def test_every_testdata_object_is_in_the_table() -> None:
    listed = {case.values[0] for case in _cases()}
    files = {str(p.relative_to(HEALTH)) for p in (HEALTH / "testdata").rglob("*.yaml")}
    assert files <= listed


def test_a_parsed_rollout_carries_argo_cds_health_and_is_complete_only_when_healthy() -> None:
    paused = parse_rollout(_load(HEALTH / "testdata" / "suspended_v1.0_pausedRollout.yaml"))
    assert (paused.health, paused.health_message) == ("Suspended", "CanaryPauseStep")
    assert paused.paused and not paused.complete and paused.health_badge == "badge-warn"

    aborted = parse_rollout(_load(HEALTH / "testdata" / "degraded_abortedRollout.yaml"))
    assert (aborted.health, aborted.health_message) == ("Degraded", "Rollout is aborted")
    assert not aborted.complete and aborted.health_badge == "badge-bad"

    # No step left to run but old replicas still terminate: not complete (the steps alone said so).
    killing = parse_rollout(_load(HEALTH / "testdata" / "canary" / "progressing_killingOldReplicas.yaml"))
    assert killing.health == "Progressing" and not killing.complete

    done = parse_rollout(_load(HEALTH / "testdata" / "canary" / "healthy_executedAllSteps.yaml"))
    assert done.health == "Healthy" and done.complete and done.health_badge == "badge-ok"


@pytest.mark.parametrize("name", sorted(p.name for p in ROLLOUTS.glob("*.yaml")))
def test_argo_rollouts_own_objects_parse_with_their_step_weight_and_health(name: str) -> None:
    obj = _load(ROLLOUTS / name)
    rollout = parse_rollout(obj)
    assert rollout.health in ("Healthy", "Progressing", "Suspended", "Degraded")
    assert rollout.health == rollout_health(obj)[0]
    if rollout.strategy == "canary" and rollout.steps:
        assert rollout.step_label.startswith("step ")


def test_application_set_generators_are_named_without_their_post_selector_and_with_nested_ones() -> None:
    # Argo CD's ApplicationSetGenerator: a `selector` beside a generator filters its results (not a
    # generator); matrix and merge nest their own generators.
    app_set = parse_application_set(
        {
            "metadata": {"name": "payments", "namespace": "argocd", "uid": "u1"},
            "spec": {
                "generators": [
                    {"clusters": {}, "selector": {"matchLabels": {"env": "prod"}}},
                    {"matrix": {"generators": [{"git": {"repoURL": "x"}}, {"list": {"elements": []}}]}},
                ]
            },
        }
    )
    assert app_set.generators == ("clusters", "matrix(git, list)")
