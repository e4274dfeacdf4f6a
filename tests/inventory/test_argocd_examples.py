"""Real Argo CD objects (../shared/argocd/examples and recorded API answers) map to app x env x cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from integrations.argocd import parse_application
from inventory.appstate import placement_of, row_values
from inventory.models import Cluster
from tests.shared_paths import SHARED

EXAMPLES = SHARED / "argocd/examples"
RECORDED = Path(__file__).resolve().parents[1] / "integrations" / "fixtures" / "argocd"
GITOPS = {"http://127.0.0.1:9999/acme/gitops.git"}
LABELS = {"app_label": "app.kubernetes.io/name", "env_label": "env", "cluster_label": "cluster"}


def _yaml(name: str) -> dict:
    return json.loads(json.dumps(YAML(typ="safe").load((EXAMPLES / name).read_text())))


def test_the_helm_child_example_without_labels_maps_by_name_and_override():
    remote = parse_application(_yaml("application-helm-child.yaml"))
    assert placement_of(remote, LABELS, {}).app == "argo-workflows"
    mapping = {
        **LABELS,
        "overrides": {"argo-workflows": {"app": "workflows", "env": "prod", "cluster": "in-cluster"}},
    }
    placement = placement_of(remote, mapping, {})
    assert (placement.app, placement.env, placement.cluster) == ("workflows", "prod", "in-cluster")
    values = row_values(remote, placement, set(), None)
    assert (
        values["repo_url"] == "https://argoproj.github.io/argo-helm"
        and values["target_revision"] == "0.45.28"
    )
    assert values["automated"] is True and values["deployed_revision"] == ""


def test_cluster_generator_apps_take_the_environment_from_the_cluster_labels():
    appset = _yaml("applicationset-cluster-generator.yaml")
    template = appset["spec"]["template"]
    cluster = Cluster(
        name="prod-eu-west-1", server="https://prod-eu-west-1.k8s.example", labels={"env": "prod"}
    )
    generated = json.loads(
        json.dumps({"metadata": template["metadata"], "spec": template["spec"]})
        .replace("{{.name}}", cluster.name)
        .replace("{{.server}}", cluster.server)
    )
    remote = parse_application(generated)
    mapping = {**LABELS, "name_pattern": r"^(?P<cluster>.+)-(?P<app>guestbook)$"}
    placement = placement_of(remote, mapping, {cluster.server: cluster})
    assert (placement.app, placement.env, placement.cluster) == ("guestbook", "prod", "prod-eu-west-1")


@pytest.mark.parametrize(
    ("name", "multi"), [("application-full.json", False), ("application-multisource.json", True)]
)
def test_recorded_api_answers_map_revision_version_and_history(name, multi):
    remote = parse_application(json.loads((RECORDED / name).read_text()))
    placement = placement_of(remote, LABELS, {})
    assert placement.app == remote.labels["app.kubernetes.io/name"] and placement.env == remote.labels["env"]
    values = row_values(remote, placement, GITOPS, None)
    assert values["is_multi_source"] is multi
    sha = "8f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b"
    assert values["revision"] == sha
    assert values["version"] == "1.4.2"
    if multi:
        assert values["revisions"] == ["2.1.0", sha] and values["repo_url"] in GITOPS
        # The values source has a ref, not a path: the app's directory is its values file's
        # ($values/environments/dev/search/values.yaml), the chart comes from a chart repository.
        assert values["path"] == "environments/dev/search"
        assert values["sources"][0]["value_files"] == ["$values/environments/dev/search/values.yaml"]
    assert values["deployed_revision"] in (remote.history[-1].revision or "", *remote.history[-1].revisions)
