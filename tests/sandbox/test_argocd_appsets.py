"""Argo CD emulator: ApplicationSets, the ownerReferences of the Applications they generate, and a
progressive sync (RollingSync, one step per env) with its status.applicationStatus."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo, generate_repo
from tests.sandbox.test_argocd_emulator import get
from tests.sandbox.test_argocd_rollouts import bump


@pytest.fixture
def repo(tmp_path: Path) -> GeneratedRepo:
    return generate_repo(tmp_path / "gitops.git", apps=3, clusters=1, commits=30, seed=5)


@pytest.fixture
def argo(start_argo: Callable[..., ArgoCDEmulator], repo: GeneratedRepo) -> ArgoCDEmulator:
    return start_argo(sync_delay=0.1, health_delay=0.1, progressive_sync_apps=[repo.apps[0].name])


def statuses(argo: ArgoCDEmulator, name: str) -> list[tuple[str, str, str]]:
    body = get(argo, f"/api/v1/applicationsets/{name}").json()
    return [(s["application"], s["step"], s["status"]) for s in body["status"]["applicationStatus"]]


def test_progressive_set_shape_and_owner_references(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    app, other = repo.apps[0].name, repo.apps[1].name
    listed = get(argo, "/api/v1/applicationsets").json()
    validate("v1alpha1ApplicationSetList", listed)
    names = {s["metadata"]["name"] for s in listed["items"]}
    # The progressive app has one set for all envs; the others one set per env, as before.
    assert app in names and f"{app}-dev" not in names and {f"{other}-{e}" for e in repo.envs} <= names
    body = get(argo, f"/api/v1/applicationsets/{app}").json()
    validate("v1alpha1ApplicationSet", body)
    assert body["spec"]["strategy"]["type"] == "RollingSync"
    steps = body["spec"]["strategy"]["rollingSync"]["steps"]
    assert [s["matchExpressions"][0]["values"] for s in steps] == [["dev"], ["stage"], ["prod"]]
    assert {s[2] for s in statuses(argo, app)} == {"Healthy"}
    assert [s[1] for s in statuses(argo, app)] == ["1", "2", "3"]

    generated = get(argo, f"/api/v1/applications/{app}-prod-eu-west-1").json()
    validate("v1alpha1Application", generated)
    owner = generated["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ApplicationSet", app, True)
    assert owner["uid"] == body["metadata"]["uid"]
    assert "automated" not in generated["spec"]["syncPolicy"]  # RollingSync turns auto-sync off
    plain = get(argo, f"/api/v1/applications/{other}-prod-eu-west-1").json()
    assert plain["metadata"]["ownerReferences"][0]["name"] == f"{other}-prod"


def test_rolling_sync_goes_env_by_env(argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path) -> None:
    app = repo.apps[0].name
    # One commit changing every env: all three go OutOfSync at once.
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(work)], check=True)
    for env in repo.envs:
        overlay = work / f"environments/{env}/{app}/kustomization.yaml"
        overlay.write_text(bump(overlay.read_text()))
    git = ["git", "-C", str(work), "-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    subprocess.run([*git, "commit", "-qam", "Bump everywhere"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    argo.reconcile()
    seen: list[tuple[str, ...]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        point = tuple(s[2] for s in statuses(argo, app))
        if not seen or seen[-1] != point:
            seen.append(point)
        if point == ("Healthy",) * 3 and len(seen) > 1:
            break
        time.sleep(0.02)
    assert seen[-1] == ("Healthy",) * 3
    # A later step never moves before every earlier step is Healthy.
    for dev, stage, prod in seen:
        if stage in ("Pending", "Progressing"):
            assert dev == "Healthy"
        if prod in ("Pending", "Progressing"):
            assert (dev, stage) == ("Healthy", "Healthy")
    assert any(p[1] == "Waiting" and p[0] != "Healthy" for p in seen)
    last = get(argo, f"/api/v1/applicationsets/{app}").json()["status"]["applicationStatus"][-1]
    assert (
        last["message"] == "Application resource became Healthy, updating status from Progressing to Healthy."
    )
    history = get(argo, f"/api/v1/applications/{app}-prod-eu-west-1").json()["status"]["history"]
    assert history[-1]["initiatedBy"] == {"username": "applicationset-controller"}
