"""Drift: classification of managed-resources diffs, and the drift page against the emulated Argo CD."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from accounts.roles import Role
from insight.drift import CONFIGURATION, MUTATION, OPERATIONAL, classify_resources
from integrations.argocd import parse_resource_diff
from integrations.http import JsonReader
from tests.factories import user_with_role
from tests.sandbox_fixtures import *  # noqa: F403
from tests.sandbox_fixtures import commit_files, read_file, set_image_tag

DEPLOYMENT_TARGET = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "payments-api",
        "namespace": "payments-payments-api",
        "labels": {"app.kubernetes.io/name": "payments-api", "env": "prod"},
        "annotations": {"team": "payments"},
    },
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "payments-api"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "payments-api"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.example.com/acme/payments-api:1.4.2",
                        "env": [{"name": "LOG_LEVEL", "value": "info"}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ]
            },
        },
    },
}


def _live(doc: dict, **edits) -> dict:
    live = json.loads(json.dumps(doc))
    live["metadata"].update(
        {
            "uid": "6f1c0d2e-0000-4000-8000-000000000001",
            "resourceVersion": "918273",
            "generation": 7,
            "creationTimestamp": "2025-03-01T10:00:00Z",
            "managedFields": [{"manager": "argocd-controller", "operation": "Apply"}],
        }
    )
    live["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "12"
    for path, value in edits.items():
        node = live
        keys = path.split("/")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value
    return live


def _item(kind, name, target, live, *, group="", namespace="payments-payments-api", modified=True) -> dict:
    """One managed-resources item exactly as Argo CD returns it (states are JSON strings)."""
    item = {"kind": kind, "name": name, "namespace": namespace, "modified": modified}
    if group:
        item["group"] = group
    if target is not None:
        item["targetState"] = json.dumps(target)
    if live is not None:
        item["liveState"] = json.dumps(live)
    return item


def _classify(items: list[dict]):
    return classify_resources([parse_resource_diff(JsonReader(i)) for i in items])


def test_mutation_only_differences_are_ignorable():
    live = _live(DEPLOYMENT_TARGET)
    live["status"] = {"replicas": 3, "readyReplicas": 3}
    live["metadata"]["annotations"]["sidecar.istio.io/status"] = '{"containers":["istio-proxy"]}'
    # API-server defaults (fields Git does not set) are not drift at all.
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    webhook_target = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "policy"},
        "webhooks": [{"name": "policy.acme.io", "clientConfig": {"service": {"name": "policy"}}}],
    }
    webhook_live = json.loads(json.dumps(webhook_target))
    webhook_live["webhooks"][0]["clientConfig"]["caBundle"] = "LS0tLS1CRUdJTi..."
    result = _classify(
        [
            _item("Deployment", "payments-api", DEPLOYMENT_TARGET, live, group="apps"),
            _item(
                "ValidatingWebhookConfiguration",
                "policy",
                webhook_target,
                webhook_live,
                group="admissionregistration.k8s.io",
                namespace="",
            ),
        ]
    )
    assert result.category == MUTATION
    assert result.count(CONFIGURATION) == 0 and result.count(OPERATIONAL) == 0
    paths = {c.path for r in result.resources for c in r.changes}
    assert "status" in paths and "metadata.managedFields" in paths
    assert "metadata.annotations.sidecar.istio.io/status" in paths
    assert "webhooks[policy.acme.io].clientConfig.caBundle" in paths
    assert not any("imagePullPolicy" in p for p in paths)


def test_replicas_are_operational_and_images_env_rbac_are_configuration():
    scaled = _live(DEPLOYMENT_TARGET)
    scaled["spec"]["replicas"] = 8
    hotfixed = _live(DEPLOYMENT_TARGET)
    container = hotfixed["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "registry.example.com/acme/payments-api:1.4.2-hotfix"
    container["env"].append({"name": "DEBUG", "value": "true"})
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "payments-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }
    widened = json.loads(json.dumps(role))
    widened["rules"][0]["verbs"] = ["*"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "data": {"password": "czNjcmV0"},
    }
    changed_secret = {**secret, "data": {"password": "b3RoZXI="}}

    scaled_only = _classify([_item("Deployment", "payments-api", DEPLOYMENT_TARGET, scaled, group="apps")])
    assert scaled_only.category == OPERATIONAL
    assert [
        (c.path, c.target, c.live) for c in scaled_only.resources[0].changes if c.category == OPERATIONAL
    ] == [("spec.replicas", "3", "8")]

    result = _classify(
        [
            _item("Deployment", "payments-api", DEPLOYMENT_TARGET, hotfixed, group="apps"),
            _item(
                "ClusterRole",
                "payments-reader",
                role,
                widened,
                group="rbac.authorization.k8s.io",
                namespace="",
            ),
            _item("Secret", "db", secret, changed_secret),
            _item("ConfigMap", "payments-api-config", {"kind": "ConfigMap", "metadata": {"name": "x"}}, None),
            _item("Service", "debug-shell", None, {"kind": "Service", "metadata": {"name": "debug-shell"}}),
            _item("Service", "payments-api", {"kind": "Service"}, {"kind": "Service"}, modified=False),
        ]
    )
    assert result.category == CONFIGURATION
    by_title = {r.title: r for r in result.resources}
    deployment = by_title["apps/Deployment payments-payments-api/payments-api"]
    reasons = {(c.path, c.reason) for c in deployment.changes if c.category == CONFIGURATION}
    assert ("spec.template.spec.containers[app].image", "image changed") in reasons
    assert ("spec.template.spec.containers[app].env[DEBUG]", "environment variables changed") in reasons
    assert deployment.loud
    rbac = by_title["rbac.authorization.k8s.io/ClusterRole payments-reader"]
    assert [(c.path, c.reason, c.live) for c in rbac.changes] == [("rules[0].verbs", "RBAC changed", '["*"]')]
    secret_changes = by_title["Secret payments-payments-api/db"].changes
    assert [(c.path, c.target, c.live) for c in secret_changes] == [("data.password", "(hidden)", "(hidden)")]
    assert by_title["ConfigMap payments-payments-api/payments-api-config"].changes[0].reason == (
        "in Git but missing from the cluster"
    )
    assert by_title["Service payments-payments-api/debug-shell"].changes[0].reason == (
        "in the cluster but not in Git (needs pruning)"
    )
    assert by_title["Service payments-payments-api/payments-api"].changes == []
    # Loudest first.
    assert result.resources[0].category == CONFIGURATION and result.resources[-1].category is None


@pytest.fixture
def argocd_options():
    # prod syncs by hand: a change to a prod overlay leaves the app OutOfSync (drift) until synced.
    return {"auto_sync_envs": ("dev", "stage")}


def test_drift_page_lists_out_of_sync_apps_and_classifies_their_resources(sandbox_inventory, client):
    from inventory.models import ArgoApplication

    inv = sandbox_inventory
    app = inv.repo.apps[0].name
    path = f"environments/prod/{app}/kustomization.yaml"
    text = read_file(inv.repo.path, path)
    changed = set_image_tag(text, "9.9.9").replace("value: ", "value: 1", 1)
    assert changed != text
    commit_files(inv.repo.path, {path: changed}, f"{app}: 9.9.9 straight to prod")
    inv.refresh()
    assert inv.poll().ok

    drifting = ArgoApplication.objects.filter(application__name=app, environment__name="prod").first()
    assert drifting.sync_status == "OutOfSync" and drifting.out_of_sync_since is not None

    client.force_login(user_with_role(Role.VIEWER))
    page = client.get(reverse("insight:drift"))
    assert page.status_code == 200
    assert drifting.name in page.content.decode()

    partial = client.get(reverse("insight:drift_resources", args=[drifting.pk]), HTTP_HX_REQUEST="true")
    html = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in html
    assert "configuration drift" in html and "image changed" in html and "9.9.9" in html
    assert "spec.replicas" in html and "operational" in html

    full = client.get(reverse("insight:drift_resources", args=[drifting.pk]))
    assert full.status_code == 200 and "<html" in full.content.decode()


def test_drift_resources_report_an_unreachable_argocd(db, client):
    from inventory.models import ArgoInstance

    from .builders import ArgoApplicationFactory

    instance = ArgoInstance.objects.create(name="gone", url="http://127.0.0.1:9", allow_http=True, token="t")
    row = ArgoApplicationFactory(instance=instance, sync_status="OutOfSync")
    client.force_login(user_with_role(Role.VIEWER))
    response = client.get(reverse("insight:drift_resources", args=[row.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "did not answer" in response.content.decode()
