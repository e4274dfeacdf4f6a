"""Argo CD emulator: Argo Rollouts apps (resource tree, live Rollout through GetResource, a canary
stepping with pauses, abort and the other resource actions, health by Argo CD's Lua rule) and the
sandbox's sync-window lever."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from integrations.argocd.resources import rollout_health
from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo, generate_repo
from tests.sandbox.test_argocd_emulator import AUTH, commit_change, get, post


@pytest.fixture
def repo(tmp_path: Path) -> GeneratedRepo:
    return generate_repo(tmp_path / "gitops.git", apps=4, clusters=1, commits=40, seed=5, rollout_apps=1)


@pytest.fixture
def argo(start_argo: Callable[..., ArgoCDEmulator]) -> ArgoCDEmulator:
    # Canary steps at 1/20 of their real length: a 5 s pause takes 0.25 s.
    return start_argo(auto_sync_envs=("dev", "stage"), rollout_time_scale=0.05)


def lua_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's Lua health rule for argoproj.io/Rollout, in full (the portal's port of
    shared/argocd/rollouts/argocd-health/health.lua, tested on Argo CD's own table)."""
    return rollout_health(obj)


def rollout_app(repo: GeneratedRepo, env: str) -> tuple[str, str]:
    app = repo.apps[3]
    assert app.workload == "Rollout"
    cluster = next(c for c in repo.clusters if c.env == env)
    return f"{app.name}-{cluster.name}", app.name


def live_rollout(argo: ArgoCDEmulator, name: str, app: str) -> dict[str, Any]:
    response = get(
        argo,
        f"/api/v1/applications/{name}/resource?group=argoproj.io&kind=Rollout&version=v1alpha1"
        f"&resourceName={app}&namespace={argo.apps[name].definition.namespace}",
    )
    assert response.status_code == 200, response.text
    return json.loads(response.json()["manifest"])


def bump(text: str) -> str:
    text = re.sub(r'newTag: "[^"]+"', 'newTag: "9.9.9"', text)
    return re.sub(r"digest: sha256:\w+", "digest: sha256:" + "cd" * 32, text)


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_rollout_app_tree_and_live_object(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    name, app = rollout_app(repo, "prod")
    tree = get(argo, f"/api/v1/applications/{name}/resource-tree").json()
    validate("v1alpha1ApplicationTree", tree)
    kinds = {(n.get("group", ""), n["kind"]) for n in tree["nodes"]}
    assert ("argoproj.io", "Rollout") in kinds and ("apps", "Deployment") not in kinds
    rollout_node = next(n for n in tree["nodes"] if n["kind"] == "Rollout")
    assert rollout_node["version"] == "v1alpha1" and rollout_node["health"]["status"] == "Healthy"
    replica_sets = [n for n in tree["nodes"] if n["kind"] == "ReplicaSet"]
    assert replica_sets and all(r["parentRefs"][0]["kind"] == "Rollout" for r in replica_sets)
    status = get(argo, f"/api/v1/applications/{name}").json()["status"]
    assert any(r["kind"] == "Rollout" and r["group"] == "argoproj.io" for r in status["resources"])

    body = get(
        argo,
        f"/api/v1/applications/{name}/resource?group=argoproj.io&kind=Rollout&version=v1alpha1&resourceName={app}",
    ).json()
    validate("applicationApplicationResourceResponse", body)
    live = json.loads(body["manifest"])
    assert live["apiVersion"] == "argoproj.io/v1alpha1" and live["kind"] == "Rollout"
    steps = live["spec"]["strategy"]["canary"]["steps"]
    assert steps[0] == {"setWeight": 20} and steps[1] == {"pause": {"duration": "5s"}}
    assert live["status"]["phase"] == "Healthy" and live["status"]["currentStepIndex"] == len(steps)
    assert live["status"]["stableRS"] == live["status"]["currentPodHash"]
    assert lua_health(live) == ("Healthy", "")

    missing = get(argo, f"/api/v1/applications/{name}/resource?group=apps&kind=Deployment&resourceName={app}")
    assert missing.status_code == 400 and "not found as part of application" in missing.json()["message"]
    service = get(argo, f"/api/v1/applications/{name}/resource?group=&kind=Service&resourceName={app}")
    assert json.loads(service.json()["manifest"])["kind"] == "Service"


def test_canary_steps_with_pauses_to_healthy_and_health_follows_the_lua_rule(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name, app = rollout_app(repo, "dev")
    commit_change(repo.path, tmp_path, f"environments/dev/{app}/kustomization.yaml", bump, "Bump")
    argo.reconcile()
    seen: list[tuple[str, int, int]] = []

    def observe() -> bool:
        live = live_rollout(argo, name, app)
        health = get(argo, f"/api/v1/applications/{name}").json()["status"]["health"]
        status = live["status"]
        # The app's health is the Rollout's health as Argo CD's Lua rule computes it.
        expected = lua_health(live)
        if health["status"] == expected[0]:
            assert health.get("message", "") == expected[1]
        point = (status["phase"], status["currentStepIndex"], status["canary"]["weights"]["canary"]["weight"])
        if not seen or seen[-1] != point:
            seen.append(point)
        return status["phase"] == "Healthy" and len(seen) > 1

    wait_until(observe)
    assert ("Paused", 1, 20) in seen and ("Paused", 3, 50) in seen and ("Paused", 5, 80) in seen
    assert seen[-1] == ("Healthy", 6, 100)
    assert {p for p, _, _ in seen} >= {"Progressing", "Paused", "Healthy"}


def test_abort_degrades_with_argo_rollouts_message_and_retry_resumes(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name, app = rollout_app(repo, "dev")
    argo.rollout_time_scale = 100.0  # the new canary stays paused at its first pause
    for state in argo.apps.values():
        if state.rollout is not None:
            state.rollout.time_scale = 100.0
    commit_change(repo.path, tmp_path, f"environments/dev/{app}/kustomization.yaml", bump, "Bump")
    argo.reconcile()
    before = live_rollout(argo, name, app)["status"]
    assert before["phase"] in ("Progressing", "Paused")

    aborted = requests.post(f"{argo.base_url}/sandbox/rollouts/{name}/abort", timeout=5).json()
    assert aborted["health"] == "Degraded"
    live = live_rollout(argo, name, app)
    status = live["status"]
    assert status["abort"] is True and status["phase"] == "Degraded" and status["abortedAt"]
    assert status["message"].startswith("RolloutAborted: Rollout aborted update to revision")
    assert status["canary"]["weights"]["canary"]["weight"] == 0 and "pauseConditions" not in status
    app_health = get(argo, f"/api/v1/applications/{name}").json()["status"]["health"]
    assert (app_health["status"], app_health["message"]) == lua_health(live)

    # Argo CD's resource actions (v1: the action as a JSON string body; v2: all in the body).
    namespace = argo.apps[name].definition.namespace
    query = f"?group=argoproj.io&kind=Rollout&version=v1alpha1&resourceName={app}&namespace={namespace}"
    retried = post(argo, f"/api/v1/applications/{name}/resource/actions{query}", "retry")
    assert retried.status_code == 200 and retried.json() == {}
    assert live_rollout(argo, name, app)["status"]["phase"] == "Progressing"
    promoted = post(
        argo,
        f"/api/v1/applications/{name}/resource/actions/v2",
        {
            "action": "promote-full",
            "group": "argoproj.io",
            "kind": "Rollout",
            "resourceName": app,
            "version": "v1alpha1",
        },
    )
    assert promoted.status_code == 200
    wait_until(
        lambda: get(argo, f"/api/v1/applications/{name}").json()["status"]["health"]["status"] == "Healthy"
    )
    unknown = post(argo, f"/api/v1/applications/{name}/resource/actions{query}", "explode")
    assert unknown.status_code == 400
    not_rollout = requests.post(
        f"{argo.base_url}/sandbox/rollouts/{rollout_app(repo, 'dev')[0].replace(app, repo.apps[0].name)}/abort",
        timeout=5,
    )
    assert not_rollout.status_code == 400


def test_sync_window_lever_closes_prod_for_a_while(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    team = repo.apps[0].team
    cluster = next(c for c in repo.clusters if c.env == "prod")
    name = f"{repo.apps[0].name}-{cluster.name}"
    assert get(argo, f"/api/v1/applications/{name}/syncwindows").json()["canSync"] is True

    set_ = requests.post(
        f"{argo.base_url}/sandbox/sync-windows", json={"project": team, "closed_for": 120}, timeout=5
    )
    assert set_.status_code == 200
    window = set_.json()["windows"][0]
    assert window["kind"] == "deny" and window["duration"] == "2m" and window["clusters"] == ["prod-*"]
    view = get(argo, f"/api/v1/applications/{name}/syncwindows").json()
    assert view["canSync"] is False and view["activeWindows"][0]["kind"] == "deny"
    assert (
        get(argo, f"/api/v1/projects/{team}").json()["spec"]["syncWindows"][0]["schedule"]
        == window["schedule"]
    )
    refused = post(argo, f"/api/v1/applications/{name}/sync", {})
    assert refused.status_code == 403 and "blocked by sync window" in refused.json()["message"]
    # Dev is not covered by the window.
    dev = f"{repo.apps[0].name}-{next(c for c in repo.clusters if c.env == 'dev').name}"
    assert get(argo, f"/api/v1/applications/{dev}/syncwindows").json()["canSync"] is True

    requests.post(f"{argo.base_url}/sandbox/sync-windows", json={"project": team, "windows": []}, timeout=5)
    assert get(argo, f"/api/v1/applications/{name}/syncwindows").json()["canSync"] is True
    bad = requests.post(
        f"{argo.base_url}/sandbox/sync-windows",
        json={"project": team, "windows": [{"kind": "deny", "schedule": "bad", "duration": "1h"}]},
        timeout=5,
    )
    assert bad.status_code == 400
    assert get(argo, "/sandbox/sync-windows", headers=AUTH).json()[team] == []
