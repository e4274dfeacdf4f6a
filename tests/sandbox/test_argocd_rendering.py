"""Argo CD emulator: GetManifests at any revision (kustomize and Helm-values apps), sync waves and
PreSync hooks of the demo repository, checked against the real swagger's response shapes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo, generate_repo, parse_helm_values, parse_kustomization
from tests.sandbox.test_argocd_emulator import (
    REPO_URL,
    bump_tag,
    commit_change,
    get,
    post,
)


@pytest.fixture
def repo(tmp_path: Path) -> GeneratedRepo:
    # apps[0] runs a PreSync migration, the last kustomize app is a Rollout, plus one Helm app.
    return generate_repo(
        tmp_path / "gitops.git", apps=4, clusters=1, commits=60, seed=5, helm_apps=1, rollout_apps=1
    )


@pytest.fixture
def argo(repo: GeneratedRepo) -> Iterator[ArgoCDEmulator]:
    emu = ArgoCDEmulator(
        repo.path, REPO_URL, reconcile_interval=60.0, sync_windows={}, auto_sync_envs=("dev", "stage")
    )
    emu.start()
    yield emu
    emu.stop()


def app_name(repo: GeneratedRepo, index: int, env: str) -> str:
    cluster = next(c for c in repo.clusters if c.env == env)
    return f"{repo.apps[index].name}-{cluster.name}"


def manifests(argo: ArgoCDEmulator, name: str, query: str = "") -> list[dict[str, Any]]:
    response = get(argo, f"/api/v1/applications/{name}/manifests{query}")
    assert response.status_code == 200, response.text
    return [json.loads(m) for m in response.json()["manifests"]]


def show(repo_path: Path, rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo_path), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_repo_options_add_helm_and_rollout_apps(repo: GeneratedRepo) -> None:
    kinds = [(a.source, a.workload, a.migrations) for a in repo.apps]
    assert kinds[0] == ("kustomize", "Deployment", True)
    assert kinds[3] == ("kustomize", "Rollout", False)
    assert kinds[4][0] == "helm" and len(kinds) == 5


def test_default_repo_has_no_helm_or_rollout_apps(tmp_path: Path) -> None:
    plain = generate_repo(tmp_path / "plain.git", apps=4, clusters=1, commits=20, seed=5)
    assert len(plain.apps) == 4
    assert {(a.source, a.workload) for a in plain.apps} == {("kustomize", "Deployment")}
    assert plain.apps[0].migrations


def test_manifests_render_the_overlay_at_a_revision(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path, validate: Callable[[str, Any], None]
) -> None:
    name = app_name(repo, 0, "prod")
    app = repo.apps[0]
    path = f"environments/prod/{app.name}/kustomization.yaml"
    before = argo.head
    after = commit_change(repo.path, tmp_path, path, bump_tag, "Promote to prod")

    body = get(argo, f"/api/v1/applications/{name}/manifests?revision={after}").json()
    validate("repositoryManifestResponse", body)
    assert body["revision"] == after and body["sourceType"] == "Kustomize"
    assert body["namespace"] == f"{app.team}-{app.name}" and body["server"].startswith("https://prod-")
    new = by_kind([json.loads(m) for m in body["manifests"]])
    old = by_kind(manifests(argo, name, f"?revision={before}"))
    image = lambda objs: objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]  # noqa: E731
    new_pin = parse_kustomization(show(repo.path, after, path)).images[0]
    assert image(new) == new_pin.reference and image(old) != image(new)
    # What kustomize does: namespace, env label, generated ConfigMap with a hash suffix referenced by name.
    cm = new["ConfigMap"]["metadata"]["name"]
    assert cm.startswith(f"{app.name}-config-") and len(cm) == len(f"{app.name}-config-") + 10
    container = new["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"][0]["configMapRef"]["name"] == cm
    assert new["Deployment"]["metadata"]["labels"]["env"] == "prod"
    assert new["Deployment"]["spec"]["replicas"] >= 2  # the prod replicas patch
    # Sync waves and the PreSync migration hook, pinned to the same image.
    assert new["Service"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    assert new["Deployment"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "1"
    job = new["Job"]
    assert job["metadata"]["annotations"] == {
        "argocd.argoproj.io/hook": "PreSync",
        "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation,HookSucceeded",
    }
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == new_pin.reference
    # Without a revision: the target revision (the branch head).
    assert get(argo, f"/api/v1/applications/{name}/manifests").json()["revision"] == after


def test_manifests_of_an_unknown_revision_is_argocds_error(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    response = get(argo, f"/api/v1/applications/{app_name(repo, 0, 'prod')}/manifests?revision=deadbeef")
    assert response.status_code == 500
    validate("runtimeError", response.json())
    assert response.json()["code"] == 2
    assert "unable to resolve 'deadbeef' to a commit SHA" in response.json()["message"]
    # A revision before the app existed: the repo-server's "app path does not exist".
    first = get(argo, f"/api/v1/applications/{app_name(repo, 0, 'prod')}/manifests?revision=bootstrap")
    assert first.status_code == 200
    missing = get(argo, "/api/v1/applications/nope/manifests")
    assert missing.status_code == 403


def test_helm_values_app_renders_the_chart_with_env_values(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path, validate: Callable[[str, Any], None]
) -> None:
    helm = repo.apps[4]
    name = app_name(repo, 4, "prod")
    app = get(argo, f"/api/v1/applications/{name}").json()
    validate("v1alpha1Application", app)
    chart, values = app["spec"]["sources"]
    assert chart["path"] == f"apps/{helm.name}/chart"
    assert chart["helm"]["valueFiles"] == [f"$values/environments/prod/{helm.name}/values.yaml"]
    assert values["ref"] == "values" and app["status"]["sourceTypes"][0] == "Helm"
    assert app["metadata"]["labels"]["team"] == helm.team
    assert app["status"]["summary"]["images"][0].startswith(f"registry.example.com/acme/{helm.name}:")

    path = f"environments/prod/{helm.name}/values.yaml"
    before = argo.head
    old_replicas = parse_helm_values(show(repo.path, before, path)).replicas
    after = commit_change(
        repo.path, tmp_path, path, lambda t: re.sub(r"replicaCount: \d+", "replicaCount: 7", t), "Scale"
    )
    rendered = by_kind(
        manifests(argo, name, f"?revisions={after}&sourcePositions=1&revisions={after}&sourcePositions=2")
    )
    deploy = rendered["Deployment"]
    assert deploy["spec"]["replicas"] == 7
    assert (
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] == app["status"]["summary"]["images"][0]
    )
    assert deploy["metadata"]["labels"]["app.kubernetes.io/part-of"] == helm.team
    assert rendered["ConfigMap"]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    assert "<no value>" not in json.dumps(rendered)
    # The values source at the old revision, the chart at the new one.
    mixed = by_kind(
        manifests(argo, name, f"?revisions={after}&sourcePositions=1&revisions={before}&sourcePositions=2")
    )
    assert mixed["Deployment"]["spec"]["replicas"] == old_replicas != 7
    body = get(argo, f"/api/v1/applications/{name}/manifests?revisions={after}&sourcePositions=1").json()
    validate("repositoryManifestResponse", body)
    assert body["sourceType"] == "Helm"
    bad = get(argo, f"/api/v1/applications/{name}/manifests?revisions=nope&sourcePositions=2")
    assert bad.status_code == 500 and "for source 2 of 2" in bad.json()["message"]


def test_sync_result_lists_the_presync_hook(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path, validate: Callable[[str, Any], None]
) -> None:
    name = app_name(repo, 0, "prod")  # apps[0] runs a PreSync migration; prod is manual here
    app = repo.apps[0]
    commit_change(repo.path, tmp_path, f"environments/prod/{app.name}/kustomization.yaml", bump_tag, "Bump")
    argo.reconcile()
    response = post(argo, f"/api/v1/applications/{name}/sync", {})
    assert response.status_code == 200, response.text
    argo.reconcile()
    body = get(argo, f"/api/v1/applications/{name}").json()
    validate("v1alpha1Application", body)
    results = body["status"]["operationState"]["syncResult"]["resources"]
    hook = results[0]
    assert (hook["group"], hook["kind"], hook["name"]) == ("batch", "Job", f"{app.name}-migrate")
    assert (hook["hookType"], hook["hookPhase"], hook["syncPhase"]) == ("PreSync", "Succeeded", "PreSync")
    assert all("hookType" not in r for r in results[1:])
