"""The zero-downtime checklist's rules on rendered objects: a passing manifest, and one failing per rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.zerodowntime import CHECK_IDS, default_modes, evaluate, modes_validate, scaled, selector_matches


def deployment(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}
                    ],
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.example.com/shop/web:1.4.2",
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }
    for path, value in overrides.items():
        node = obj
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return obj


DELETE = object()
CONTAINER = "spec__template__spec__containers__0"


def pdb(**spec: Any) -> dict[str, Any]:
    body = {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 1}
    body.update(spec)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "shop"},
            "spec": body}  # fmt: skip


def findings(objects: list[dict[str, Any]], check: str) -> list[str]:
    (result,) = evaluate(objects, only=[check])
    return [f"{f.target}: {f.message}" for f in result.findings]


def test_a_complete_deployment_passes_every_check():
    results = evaluate([deployment(), pdb()])
    assert [r.check.id for r in results] == list(CHECK_IDS)
    assert all(r.passed for r in results), [f.message for r in results for f in r.findings]


def test_objects_without_workloads_pass():
    assert all(
        r.passed and r.workloads == 0 for r in evaluate([{"kind": "ConfigMap", "metadata": {"name": "x"}}])
    )


def test_readiness_probe_missing_is_found_per_container():
    objs = [deployment(**{f"{CONTAINER}__readinessProbe": DELETE}), pdb()]
    assert findings(objs, "readiness_probe") == ["Deployment shop/web container web: no readinessProbe"]
    (result,) = evaluate(objs, only=["readiness_probe"])
    f = result.findings[0]
    assert (f.kind, f.namespace, f.name, f.container) == ("Deployment", "shop", "web", "web")


def test_liveness_probe_missing():
    objs = [deployment(**{f"{CONTAINER}__livenessProbe": DELETE}), pdb()]
    assert findings(objs, "liveness_probe") == ["Deployment shop/web container web: no livenessProbe"]


def test_no_pdb_selecting_the_workload():
    other = pdb(selector={"matchLabels": {"app": "api"}})
    assert findings([deployment(), other], "pod_disruption_budget") == [
        "Deployment shop/web: no PodDisruptionBudget selects its pods"
    ]
    # The same labels in another namespace select nothing either.
    elsewhere = pdb()
    elsewhere["metadata"]["namespace"] = "other"
    assert findings([deployment(), elsewhere], "pod_disruption_budget")


@pytest.mark.parametrize(
    ("spec", "replicas", "ok"),
    [
        ({"minAvailable": 3}, 3, False),
        ({"minAvailable": 2}, 3, True),
        ({"minAvailable": "100%"}, 3, False),
        ({"minAvailable": "50%"}, 3, True),  # ceil(1.5) = 2 of 3
        ({"minAvailable": "67%"}, 3, False),  # ceil(2.01) = 3 of 3
        ({"maxUnavailable": 0}, 3, False),
        ({"maxUnavailable": "0%"}, 3, False),
        ({"maxUnavailable": "10%"}, 3, True),  # rounded up to 1
        ({"maxUnavailable": 3}, 3, False),  # a drain may evict every replica
    ],
)
def test_pdb_must_allow_a_disruption_with_the_replica_count(spec, replicas, ok):
    body = pdb(**spec)
    if "minAvailable" in spec:
        del body["spec"]["maxUnavailable"]
    found = findings([deployment(spec__replicas=replicas), body], "pod_disruption_budget")
    assert (not found) is ok, found


def test_pdb_match_expressions_and_replicas_from_an_hpa():
    expr = pdb(selector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]})
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1}}  # fmt: skip
    assert findings([deployment(), expr], "pod_disruption_budget") == []
    assert findings([deployment(), expr, hpa], "pod_disruption_budget") == [
        "Deployment shop/web: 1 replica(s): any disruption takes the service down",
        "Deployment shop/web: PodDisruptionBudget web: maxUnavailable 1 lets a drain evict all 1 replica(s)",
    ]


def test_two_pdbs_selecting_one_workload():
    second = pdb()
    second["metadata"]["name"] = "web-2"
    assert "2 PodDisruptionBudgets select its pods" in findings([deployment(), pdb(), second],
                                                              "pod_disruption_budget")[0]  # fmt: skip


def test_selector_semantics():
    assert selector_matches({}, {"a": "b"})
    assert not selector_matches(None, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"a": "b"})
    assert not selector_matches(
        {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["b"]}]}, {"a": "b"}
    )


def test_resources_missing_requests_and_limits():
    objs = [deployment(**{f"{CONTAINER}__resources": {"requests": {"cpu": "1"}}}), pdb()]
    assert findings(objs, "resources") == [
        "Deployment shop/web container web: no requests.memory, limits.memory"
    ]


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("registry.example.com/shop/web:1.4.2", True),
        ("registry.example.com:5000/shop/web", False),  # a port is not a tag
        ("registry.example.com/shop/web:latest", False),
        ("registry.example.com/shop/web@sha256:" + "a" * 64, True),
        ("registry.example.com/shop/web:latest@sha256:" + "a" * 64, True),
        ("web", False),
    ],
)
def test_images_must_be_pinned(image, ok):
    found = findings([deployment(**{f"{CONTAINER}__image": image}), pdb()], "image_pinned")
    assert (not found) is ok, found


def test_init_container_images_are_checked_too():
    objs = [
        deployment(spec__template__spec__initContainers=[{"name": "migrate", "image": "tools/migrate"}]),
        pdb(),
    ]
    assert findings(objs, "image_pinned") == [
        "Deployment shop/web container migrate: image tools/migrate has no tag (means latest)"
    ]


@pytest.mark.parametrize(
    ("strategy", "replicas", "ok"),
    [
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 3, True),
        ({"type": "Recreate"}, 3, False),
        ({}, 3, True),  # defaults 25%/25%: floor(0.75) = 0 unavailable, ceil(0.75) = 1 surge
        ({}, 4, False),  # floor(1.0) = 1 pod down
        ({"rollingUpdate": {"maxUnavailable": "10%"}}, 9, True),
        ({"rollingUpdate": {"maxUnavailable": "10%"}}, 10, False),
        ({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}, 3, False),  # the API makes it 1
        ({"rollingUpdate": {"maxUnavailable": 1}}, 3, False),
    ],
)
def test_rolling_update_never_drops_below_the_replica_count(strategy, replicas, ok):
    found = findings([deployment(spec__strategy=strategy, spec__replicas=replicas), pdb()], "rolling_update")
    assert (not found) is ok, found


def test_rollouts_pass_with_a_strategy_and_fail_without():
    rollout = deployment(apiVersion="argoproj.io/v1alpha1", kind="Rollout",
                         spec__strategy={"canary": {"steps": [{"setWeight": 20}]}})  # fmt: skip
    assert findings([rollout, pdb()], "rolling_update") == []
    bare = copy.deepcopy(rollout)
    bare["spec"]["strategy"] = {}
    assert findings([bare, pdb()], "rolling_update") == [
        "Rollout shop/web: the Rollout declares neither a canary nor a blueGreen strategy"
    ]
    # The Rollout's pod template is checked like a Deployment's.
    bare["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    assert findings([bare, pdb()], "readiness_probe") == ["Rollout shop/web container web: no readinessProbe"]


def test_rollout_with_a_workload_ref_reads_the_referenced_template():
    target = deployment(spec__replicas=0)
    target["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web-ro", "namespace": "shop"},
               "spec": {"replicas": 3, "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "strategy": {"blueGreen": {"activeService": "web"}}}}  # fmt: skip
    found = findings([rollout, target], "liveness_probe")
    assert "Rollout shop/web-ro container web: no livenessProbe" in found


def test_statefulset_updates_one_pod_at_a_time_with_two_replicas():
    sts = deployment(kind="StatefulSet", spec__strategy=DELETE)
    assert findings([sts, pdb()], "rolling_update") == []
    sts["spec"]["updateStrategy"] = {"rollingUpdate": {"maxUnavailable": 2}}
    assert findings([sts, pdb()], "rolling_update") == [
        "StatefulSet shop/web: rollingUpdate.maxUnavailable resolves to 2 pods at once"
    ]


def test_graceful_shutdown_needs_grace_period_and_prestop():
    objs = [deployment(**{"spec__template__spec__terminationGracePeriodSeconds": DELETE,
                          f"{CONTAINER}__lifecycle": DELETE}), pdb()]  # fmt: skip
    assert findings(objs, "graceful_shutdown") == [
        "Deployment shop/web: terminationGracePeriodSeconds is not set",
        "Deployment shop/web container web: no lifecycle.preStop hook",
    ]


def test_topology_spread_or_anti_affinity():
    bare = deployment(spec__template__spec__topologySpreadConstraints=DELETE)
    assert findings([bare, pdb()], "topology_spread")
    bare["spec"]["template"]["spec"]["affinity"] = {
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
    }
    assert findings([bare, pdb()], "topology_spread") == []


def test_namespace_defaults_to_the_destination():
    dep = deployment(**{f"{CONTAINER}__readinessProbe": DELETE})
    del dep["metadata"]["namespace"]
    body = pdb()
    del body["metadata"]["namespace"]
    (result,) = evaluate([dep, body], default_namespace="team-web", only=["readiness_probe"])
    assert result.findings[0].namespace == "team-web"
    assert all(
        r.passed for r in evaluate([dep, body], default_namespace="team-web", only=["pod_disruption_budget"])
    )


def test_scaled_rounding():
    assert scaled("25%", 2, round_up=False) == 0
    assert scaled("25%", 2, round_up=True) == 1
    assert scaled("x", 2, round_up=True) is None


def test_modes_defaults_and_validation():
    prod, dev = default_modes(production_like=True), default_modes(production_like=False)
    assert prod["readiness_probe"] == "block" and dev["readiness_probe"] == "warn"
    assert dev["graceful_shutdown"] == "off" and prod["graceful_shutdown"] == "block"
    assert modes_validate({"readiness_probe": "warn"}) == {"readiness_probe": "warn"}
    with pytest.raises(ValueError, match="unknown check 'probes'"):
        modes_validate({"probes": "warn"})
    with pytest.raises(ValueError, match="readiness_probe: expected one of off, warn, block, got 'deny'"):
        modes_validate({"readiness_probe": "deny"})
    with pytest.raises(ValueError, match="must be a mapping"):
        modes_validate(["readiness_probe"])
