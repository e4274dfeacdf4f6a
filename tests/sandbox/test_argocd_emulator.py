"""Argo CD emulator: API behaviour of API.md, convergence, faults, watch stream, and contract tests
against the real Argo CD swagger.json (unknown or renamed keys fail)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo, generate_repo, parse_kustomization
from tests.shared_paths import SHARED

REPO_URL = "https://git.example.com/acme/gitops.git"
TOKEN = "sandbox-argocd-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SWAGGER = SHARED / "argocd/swagger.json"


# ---- fixtures and helpers ---------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> GeneratedRepo:
    return generate_repo(tmp_path / "gitops.git", apps=4, clusters=1, commits=80, seed=5)


@pytest.fixture
def start(repo: GeneratedRepo) -> Iterator[Callable[..., ArgoCDEmulator]]:
    started: list[ArgoCDEmulator] = []

    def _start(**kwargs: Any) -> ArgoCDEmulator:
        kwargs.setdefault("reconcile_interval", 60.0)  # tests converge explicitly via reconcile()
        kwargs.setdefault("sync_windows", {})
        emu = ArgoCDEmulator(repo.path, REPO_URL, **kwargs)
        emu.start()
        started.append(emu)
        return emu

    yield _start
    for emu in started:
        emu.stop()


@pytest.fixture
def argo(start: Callable[..., ArgoCDEmulator], repo: GeneratedRepo) -> ArgoCDEmulator:
    # Prod is manual here; the second app is multi-source.
    return start(auto_sync_envs=("dev", "stage"), multi_source_apps=[repo.apps[1].name])


def get(emu: ArgoCDEmulator, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(emu.base_url + path, headers=kwargs.pop("headers", AUTH), timeout=10, **kwargs)


def post(emu: ArgoCDEmulator, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return requests.post(
        emu.base_url + path, json=body or {}, headers=kwargs.pop("headers", AUTH), timeout=10, **kwargs
    )


def app_json(emu: ArgoCDEmulator, name: str) -> dict[str, Any]:
    response = get(emu, f"/api/v1/applications/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def first_app(repo: GeneratedRepo, env: str, *, multi: bool = False) -> str:
    """The Application of the first app (or of the multi-source second app) in ``env``."""
    app = repo.apps[1 if multi else 0]
    cluster = next(c for c in repo.clusters if c.env == env)
    return f"{app.name}-{cluster.name}"


def commit_change(repo_path: Path, tmp: Path, path: str, edit: Callable[[str], str], message: str) -> str:
    """Push a commit to the bare repo the way the portal would (clone, edit, commit, push)."""
    work = tmp / f"work-{time.monotonic_ns()}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True, cwd=work).stdout  # noqa: E731
    subprocess.run(["git", "clone", "-q", str(repo_path), str(work)], check=True)
    target = work / path
    target.write_text(edit(target.read_text()))
    run("git", "-c", "user.name=Portal Bot", "-c", "user.email=portal@example.com", "commit", "-qam", message)
    run("git", "push", "-q", "origin", "HEAD:main")
    return run("git", "rev-parse", "HEAD").strip()


def bump_tag(text: str) -> str:
    k = parse_kustomization(text)
    old = k.images[0].new_tag or k.images[0].digest
    if k.images[0].digest:
        return text.replace(old, "sha256:" + "ab" * 32)
    major, minor, patch = old.split(".")
    return text.replace(f'"{old}"', f'"{major}.{minor}.{int(patch) + 50}"')


def overlay_path(name: str) -> str:
    app, env = name.rsplit("-", 4)[0], name.split("-")[-4]
    return f"environments/{env}/{app}/kustomization.yaml"


# ---- auth and transport -----------------------------------------------------------------------------------


def test_auth_errors_have_argocd_bodies(argo: ArgoCDEmulator) -> None:
    missing = get(argo, "/api/v1/applications", headers={})
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "no session information",
        "code": 16,
        "message": "no session information",
    }
    bad = get(argo, "/api/v1/applications", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["message"].startswith("invalid session: ")
    wrong = post(argo, "/api/v1/session", {"username": "admin", "password": "x"}, headers={})
    assert wrong.status_code == 401 and wrong.json()["message"] == "Invalid username or password"


def test_session_login_bearer_and_cookie(argo: ArgoCDEmulator) -> None:
    response = post(argo, "/api/v1/session", {"username": "admin", "password": "sandbox"}, headers={})
    token = response.json()["token"]
    assert token.count(".") == 2 and "argocd.token=" in response.headers["Set-Cookie"]
    assert get(argo, "/api/v1/applications", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert get(argo, "/api/v1/applications", headers={"Cookie": f"argocd.token={token}"}).status_code == 200
    info = get(argo, "/api/v1/session/userinfo", headers={"Authorization": f"Bearer {token}"}).json()
    assert info == {"loggedIn": True, "username": "admin", "iss": "argocd"}
    assert get(argo, "/api/v1/session/userinfo", headers={}).json() == {"loggedIn": False}


def test_version_anonymous_only_version(argo: ArgoCDEmulator) -> None:
    assert set(get(argo, "/api/version", headers={}).json()) == {"Version"}
    assert {"Version", "BuildDate", "GitCommit", "GoVersion"} <= set(get(argo, "/api/version").json())


def test_non_json_post_is_415(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    name = first_app(repo, "prod")
    response = requests.post(
        f"{argo.base_url}/api/v1/applications/{name}/sync", data="{}", headers=AUTH, timeout=5
    )
    assert response.status_code == 415 and response.text == "Invalid content type"


def test_missing_app_is_403_unless_project_given(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    assert get(argo, "/api/v1/applications/nope").json() == {
        "error": "permission denied",
        "code": 7,
        "message": "permission denied",
    }
    not_found = get(argo, "/api/v1/applications/nope?project=payments")
    assert not_found.status_code == 404
    assert not_found.json()["message"] == 'applications.argoproj.io "nope" not found'
    name = first_app(repo, "prod")
    assert get(argo, f"/api/v1/applications/{name}/resource-tree").status_code == 200
    assert get(argo, "/api/v1/applications/nope/resource-tree").status_code == 403


# ---- listing ------------------------------------------------------------------------------------------------


def test_apps_built_from_repo(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    body = get(argo, "/api/v1/applications").json()
    names = [i["metadata"]["name"] for i in body["items"]]
    assert names == sorted(f"{a.name}-{c.name}" for a in repo.apps for c in repo.clusters)
    assert body["metadata"]["resourceVersion"].isdigit()
    app = next(
        i for i in body["items"] if i["metadata"]["labels"]["app.kubernetes.io/name"] == repo.apps[0].name
    )
    spec, status = app["spec"], app["status"]
    env = app["metadata"]["labels"]["env"]
    assert (
        spec["source"]["path"] == f"environments/{env}/{app['metadata']['labels']['app.kubernetes.io/name']}"
    )
    assert spec["source"]["targetRevision"] == "main" and spec["source"]["repoURL"] == REPO_URL
    assert spec["destination"]["server"].endswith(".k8s.example")
    assert status["sync"] == {**status["sync"], "status": "Synced", "revision": repo.head_sha}
    assert status["health"]["status"] == "Healthy"
    assert status["history"] and status["history"][-1]["id"] == max(h["id"] for h in status["history"])
    assert status["summary"]["images"][0].startswith("registry.example.com/acme/")


def test_fields_whitelist_drops_history_and_revisions(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    fields = "items.metadata.name,items.status.sync.status,items.status.sync.revision,items.status.sync.revisions,items.status.history,items.status.health,items.metadata.resourceVersion"
    body = get(argo, f"/api/v1/applications?fields={fields}").json()
    assert set(body) == {"metadata", "items"}
    for item in body["items"]:
        assert set(item) == {"metadata", "status"}
        assert set(item["metadata"]) == {"name"}
        assert set(item["status"]) == {"sync", "health"}
        assert "revisions" not in item["status"]["sync"]
    multi = next(i for i in body["items"] if i["metadata"]["name"] == first_app(repo, "prod", multi=True))
    assert set(multi["status"]["sync"]) == {"status"}  # multi-source: singular revision is empty
    quirk = get(argo, "/api/v1/applications?fields=items.status.operationState.operation.sync").json()
    assert "revision" in next(iter(quirk["items"]))["status"]["operationState"]["operation"]["sync"]
    excluded = get(argo, "/api/v1/applications?fields=-items.spec,items.status.resources").json()["items"][0]
    # Excluding "spec" drops only the whole-spec entry: its whitelisted children stay.
    assert "revisionHistoryLimit" not in excluded["spec"] and "project" in excluded["spec"]
    assert "resources" not in excluded["status"]
    assert "history" not in excluded["status"] and "summary" in excluded["status"]


def test_fields_projection_builds_its_own_objects_and_keeps_the_whitelist_order(
    argo: ArgoCDEmulator, repo: GeneratedRepo
) -> None:
    name = first_app(repo, "dev")
    full = get(argo, f"/api/v1/applications/{name}").json()
    # Overlapping entries: "spec" whole, then its children; a lone leaf of status.sync.
    fields = "items.status.sync.status,items.spec.project,items.spec,items.metadata.name"
    for _ in range(2):  # the second answer would show anything the first wrote into the app
        item = next(
            i
            for i in get(argo, f"/api/v1/applications?fields={fields}").json()["items"]
            if i["metadata"]["name"] == name
        )
        assert item == {
            "metadata": {"name": name},
            "spec": full["spec"],
            "status": {"sync": {"status": full["status"]["sync"]["status"]}},
        }
        assert list(item) == ["metadata", "spec", "status"]  # whitelist order, not the query's
    after = get(argo, f"/api/v1/applications/{name}").json()
    assert after["status"]["sync"] == full["status"]["sync"] and "revision" in after["status"]["sync"]


def test_reconcile_renders_the_apps_it_changed_before_any_list(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    # Argo CD lists from its informer's cache of the objects its controller wrote: the emulator
    # renders a changed app at reconcile, not inside the next list request.
    name = first_app(repo, "dev")
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    with argo.lock:
        apps = list(argo.apps.values())
        assert apps and all(a._cache is not None and a._cache[0] == a.resource_version for a in apps)


@pytest.mark.parametrize(
    ("selector", "expect"),
    [
        ("env=prod", lambda labels: labels["env"] == "prod"),
        ("env!=prod", lambda labels: labels["env"] != "prod"),
        ("env in (dev,stage)", lambda labels: labels["env"] in ("dev", "stage")),
        (
            "env=prod,team notin (payments)",
            lambda labels: labels["env"] == "prod" and labels["team"] != "payments",
        ),
        ("region", lambda labels: True),
        ("!nope", lambda labels: True),
    ],
)
def test_selector_filtering(
    argo: ArgoCDEmulator, selector: str, expect: Callable[[dict[str, str]], bool]
) -> None:
    everything = get(argo, "/api/v1/applications").json()["items"]
    wanted = [a["metadata"]["name"] for a in everything if expect(a["metadata"]["labels"])]
    got = get(argo, "/api/v1/applications", params={"selector": selector}).json()["items"]
    assert [a["metadata"]["name"] for a in got] == wanted and wanted


def test_project_name_and_repo_filters(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    team = repo.apps[0].team
    by_project = get(argo, "/api/v1/applications", params={"projects": team}).json()["items"]
    assert by_project and {a["spec"]["project"] for a in by_project} == {team}
    name = first_app(repo, "dev")
    assert len(get(argo, "/api/v1/applications", params={"name": name}).json()["items"]) == 1
    assert get(argo, "/api/v1/applications", params={"repo": REPO_URL.upper() + "/"}).json()["items"]
    assert get(argo, "/api/v1/applications", params={"repo": "https://other/x.git"}).json()["items"] == []


# ---- convergence --------------------------------------------------------------------------------------------


def test_new_commit_on_manual_prod_is_out_of_sync_until_synced(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name = first_app(repo, "prod")
    dev_name = first_app(repo, "dev")
    before = app_json(argo, name)
    dev_before = app_json(argo, dev_name)
    sha = commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, f"Promote {name} to prod")
    argo.reconcile()

    after = app_json(argo, name)
    assert after["status"]["sync"]["status"] == "OutOfSync"
    assert after["status"]["sync"]["revision"] == sha
    assert after["status"]["history"] == before["status"]["history"]
    # Untouched apps follow the head but stay Synced without a new deployment.
    dev_after = app_json(argo, dev_name)
    assert dev_after["status"]["sync"] == {**dev_before["status"]["sync"], "revision": sha}
    assert dev_after["status"]["history"] == dev_before["status"]["history"]

    synced = post(argo, f"/api/v1/applications/{name}/sync", {"revision": "main", "prune": True})
    assert synced.status_code == 200, synced.text
    assert synced.json()["operation"]["initiatedBy"] == {"username": "admin"}
    argo.reconcile()
    final = app_json(argo, name)
    assert final["status"]["sync"]["status"] == "Synced"
    assert final["status"]["health"]["status"] == "Healthy"
    entry = final["status"]["history"][-1]
    assert entry["revision"] == sha and entry["id"] == before["status"]["history"][-1]["id"] + 1
    assert entry["initiatedBy"] == {"username": "admin"}
    assert final["status"]["operationState"]["phase"] == "Succeeded"
    assert final["status"]["operationState"]["syncResult"]["revision"] == sha
    assert final["status"]["summary"] != before["status"]["summary"]


def test_automated_sync_goes_running_progressing_healthy(
    start: Callable[..., ArgoCDEmulator], repo: GeneratedRepo, tmp_path: Path
) -> None:
    argo = start(sync_delay=0.3, health_delay=0.3, reconcile_interval=0.05)
    name = first_app(repo, "prod")
    before = app_json(argo, name)
    sha = commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    running = app_json(argo, name)
    assert running["status"]["operationState"]["phase"] == "Running"
    assert "finishedAt" not in running["status"]["operationState"]
    assert running["status"]["operationState"]["operation"]["initiatedBy"] == {"automated": True}
    phases = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        current = app_json(argo, name)
        phases.add(current["status"]["health"]["status"])
        if (
            current["status"]["health"]["status"] == "Healthy"
            and current["status"]["history"][-1]["revision"] == sha
        ):
            break
        time.sleep(0.05)
    assert "Progressing" in phases
    assert current["status"]["sync"]["status"] == "Synced"
    assert current["status"]["history"][-1]["initiatedBy"] == {"automated": True}
    assert len(current["status"]["history"]) == min(10, len(before["status"]["history"]) + 1)


def test_history_is_capped_at_revision_history_limit(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    name = first_app(repo, "prod")
    for _ in range(12):
        assert post(argo, f"/api/v1/applications/{name}/sync", {}).status_code == 200
        argo.reconcile()
    history = app_json(argo, name)["status"]["history"]
    assert len(history) == 10
    assert [h["id"] for h in history] == list(range(history[0]["id"], history[0]["id"] + 10))


def test_rollback_rules(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    prod, dev = first_app(repo, "prod"), first_app(repo, "dev")
    dev_id = app_json(argo, dev)["status"]["history"][0]["id"]
    auto = post(argo, f"/api/v1/applications/{dev}/rollback", {"id": dev_id})
    assert auto.status_code == 400 and auto.json()["code"] == 9
    unknown = post(argo, f"/api/v1/applications/{prod}/rollback", {"id": 9999})
    assert unknown.status_code == 400 and unknown.json()["code"] == 3
    history = app_json(argo, prod)["status"]["history"]
    target = history[0]
    response = post(argo, f"/api/v1/applications/{prod}/rollback", {"id": target["id"]})
    assert response.status_code == 200, response.text
    argo.reconcile()
    after = app_json(argo, prod)
    assert after["status"]["history"][-1]["revision"] == target["revision"]
    assert after["status"]["sync"]["status"] == ("Synced" if len(history) == 1 else "OutOfSync")


def test_second_operation_is_refused_while_one_runs(
    start: Callable[..., ArgoCDEmulator], repo: GeneratedRepo
) -> None:
    argo = start(sync_delay=5, auto_sync_envs=())
    name = first_app(repo, "prod")
    assert post(argo, f"/api/v1/applications/{name}/sync", {}).status_code == 200
    busy = post(argo, f"/api/v1/applications/{name}/sync", {})
    assert busy.status_code == 400 and busy.json() == {
        "error": "another operation is already in progress",
        "code": 9,
        "message": "another operation is already in progress",
    }


def test_sync_to_revision_refused_with_auto_sync(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    response = post(
        argo, f"/api/v1/applications/{first_app(repo, 'dev')}/sync", {"revision": repo.head_sha[:8]}
    )
    assert response.status_code == 400 and "auto-sync currently set to main" in response.json()["message"]
    bad = post(argo, f"/api/v1/applications/{first_app(repo, 'prod')}/sync", {"revision": "no-such-branch"})
    assert bad.status_code == 500 and bad.json()["code"] == 2


def test_revision_metadata_from_git(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    name = first_app(repo, "prod")
    sha = app_json(argo, name)["status"]["history"][-1]["revision"]
    meta = get(argo, f"/api/v1/applications/{name}/revisions/{sha}/metadata").json()
    info = subprocess.run(
        ["git", "-C", str(repo.path), "show", "-s", "--format=%an <%ae>%n%B", sha],
        capture_output=True,
        text=True,
    ).stdout
    assert meta["author"] == info.splitlines()[0]
    assert meta["message"] == "\n".join(info.splitlines()[1:]).rstrip("\n")
    assert meta["date"].endswith("Z")
    root = subprocess.run(
        ["git", "-C", str(repo.path), "rev-list", "--max-parents=0", "main"], capture_output=True, text=True
    ).stdout.strip()
    assert get(argo, f"/api/v1/applications/{name}/revisions/{root}/metadata").json()["tags"] == ["bootstrap"]


def test_managed_resources_show_diff_when_out_of_sync(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name = first_app(repo, "prod")
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    items = get(argo, f"/api/v1/applications/{name}/managed-resources").json()["items"]
    deployment = next(i for i in items if i["kind"] == "Deployment")
    assert deployment["modified"] is True
    target, live = json.loads(deployment["targetState"]), json.loads(deployment["liveState"])
    assert (
        target["spec"]["template"]["spec"]["containers"][0]["image"]
        != live["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert "status" in live
    assert not next(i for i in items if i["kind"] == "Service").get("modified")


def test_multi_source_app(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    name = first_app(repo, "prod", multi=True)
    app = app_json(argo, name)
    assert "source" not in app["spec"] and len(app["spec"]["sources"]) == 2
    assert app["spec"]["sources"][1]["ref"] == "values"
    assert app["status"]["sync"]["revisions"] == [repo.head_sha, repo.head_sha]
    assert "revision" not in app["status"]["sync"]
    entry = app["status"]["history"][-1]
    assert len(entry["revisions"]) == 2 and "revision" not in entry
    meta = get(
        argo,
        f"/api/v1/applications/{name}/revisions/{entry['revisions'][0]}/metadata?sourceIndex=0&versionId={entry['id']}",
    )
    assert meta.status_code == 200


# ---- faults --------------------------------------------------------------------------------------------------


def test_degraded_tag_fault(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    name = first_app(repo, "stage")
    image = app_json(argo, name)["status"]["summary"]["images"][0]
    tag = image.split("@")[-1] if "@" in image else image.rsplit(":", 1)[-1]
    requests.post(f"{argo.base_url}/sandbox/faults", json={"degraded_tags": [tag]}, timeout=5)
    argo.reconcile()
    health = app_json(argo, name)["status"]["health"]
    assert health["status"] == "Degraded" and "progress deadline" in health["message"]
    tree = get(argo, f"/api/v1/applications/{name}/resource-tree").json()
    assert {n["health"]["status"] for n in tree["nodes"] if n["kind"] == "Pod"} == {"Degraded"}
    requests.post(f"{argo.base_url}/sandbox/reset-faults", timeout=5)
    argo.reconcile()
    assert app_json(argo, name)["status"]["health"]["status"] == "Healthy"


def test_fail_sync_fault(argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path) -> None:
    name = first_app(repo, "dev")
    requests.post(
        f"{argo.base_url}/sandbox/faults", json={"fail_sync_apps": [name.split("-dev-")[0] + "-*"]}, timeout=5
    )
    before = app_json(argo, name)["status"]["history"]
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    app = app_json(argo, name)
    assert app["status"]["operationState"]["phase"] == "Failed"
    assert app["status"]["sync"]["status"] == "OutOfSync"
    assert app["status"]["history"] == before
    assert app["status"]["conditions"][0]["type"] == "SyncError"


def test_error_fault_with_count_then_recovers(argo: ArgoCDEmulator) -> None:
    requests.post(
        f"{argo.base_url}/sandbox/faults", json={"error_rate": 1.0, "status": 500, "count": 2}, timeout=5
    )
    for _ in range(2):
        failed = get(argo, "/api/v1/applications")
        assert failed.status_code == 500
        assert set(failed.json()) == {"error", "code", "message"}
    assert get(argo, "/api/v1/applications").status_code == 200
    requests.post(
        f"{argo.base_url}/sandbox/faults",
        json={"error_rate": 1.0, "status": 502, "html": True, "count": None},
        timeout=5,
    )
    proxy = get(argo, "/api/v1/clusters")
    assert proxy.status_code == 502 and proxy.headers["Content-Type"] == "text/html"
    # Admin endpoints are never faulted.
    assert requests.get(f"{argo.base_url}/sandbox/state", timeout=5).status_code == 200


def test_expired_tokens_fault(argo: ArgoCDEmulator) -> None:
    requests.post(f"{argo.base_url}/sandbox/faults", json={"expire_tokens": True}, timeout=5)
    response = get(argo, "/api/v1/applications")
    assert response.status_code == 401
    assert response.json()["message"] == "invalid session: token has invalid claims: token is expired"


def test_timeout_fault_hangs_and_stop_is_prompt(start: Callable[..., ArgoCDEmulator]) -> None:
    argo = start()
    requests.post(f"{argo.base_url}/sandbox/faults", json={"timeout": True, "timeout_s": 30}, timeout=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(argo.base_url + "/api/v1/applications", headers=AUTH, timeout=0.5)
    started = time.monotonic()
    argo.stop()
    assert time.monotonic() - started < 5


def test_latency_fault_limited_to_paths(argo: ArgoCDEmulator) -> None:
    requests.post(
        f"{argo.base_url}/sandbox/faults", json={"latency_ms": 400, "paths": ["/api/v1/clusters*"]}, timeout=5
    )
    t0 = time.monotonic()
    get(argo, "/api/v1/clusters")
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    get(argo, "/api/v1/projects")
    assert slow >= 0.4 and time.monotonic() - t0 < 0.4


def test_unknown_fault_key_rejected(argo: ArgoCDEmulator) -> None:
    response = requests.post(f"{argo.base_url}/sandbox/faults", json={"latencyy": 1}, timeout=5)
    assert response.status_code == 400


def test_deny_sync_window_blocks_sync(argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path) -> None:
    name = first_app(repo, "prod")
    team = app_json(argo, name)["spec"]["project"]
    assert get(argo, f"/api/v1/applications/{name}/syncwindows").json() == {"canSync": True}
    requests.post(f"{argo.base_url}/sandbox/faults", json={"deny_sync_window": {"project": team}}, timeout=5)
    windows = get(argo, f"/api/v1/applications/{name}/syncwindows").json()
    assert windows["canSync"] is False
    assert windows["activeWindows"][0]["kind"] == "deny"
    assert windows["assignedWindows"] == windows["activeWindows"]
    blocked = post(argo, f"/api/v1/applications/{name}/sync", {})
    assert blocked.status_code == 403 and blocked.json()["message"] == "cannot sync: blocked by sync window"
    assert get(argo, f"/api/v1/projects/{team}/syncwindows").json()["windows"][0]["kind"] == "deny"
    assert get(argo, f"/api/v1/projects/{team}").json()["spec"]["syncWindows"][0]["schedule"] == "* * * * *"
    # Automated sync is blocked too: a dev app of the same team stays OutOfSync.
    dev = next(
        a for a in get(argo, f"/api/v1/applications?projects={team}&selector=env%3Ddev").json()["items"]
    )
    commit_change(repo.path, tmp_path, overlay_path(dev["metadata"]["name"]), bump_tag, "bump")
    argo.reconcile()
    assert app_json(argo, dev["metadata"]["name"])["status"]["sync"]["status"] == "OutOfSync"
    requests.post(f"{argo.base_url}/sandbox/reset-faults", timeout=5)
    argo.reconcile()
    assert app_json(argo, dev["metadata"]["name"])["status"]["sync"]["status"] == "Synced"


def test_schedule_based_window(start: Callable[..., ArgoCDEmulator], repo: GeneratedRepo) -> None:
    team = repo.apps[0].team
    never = {"kind": "allow", "schedule": "0 3 29 2 1", "duration": "1h", "applications": ["*"]}
    argo = start(sync_windows={team: [never]})
    name = next(
        f"{a.name}-{c.name}" for a in repo.apps if a.team == team for c in repo.clusters if c.env == "prod"
    )
    body = get(argo, f"/api/v1/applications/{name}/syncwindows").json()
    assert body["canSync"] is False and "activeWindows" not in body  # outside an allow window


# ---- stream -----------------------------------------------------------------------------------------------


def _read_stream(
    lines: Iterator[str], until: Callable[[dict[str, Any]], bool], out: list[dict[str, Any]]
) -> None:
    for line in lines:
        if not line or line.startswith(":"):
            continue
        event = json.loads(line.removeprefix("data: ").strip())
        out.append(event)
        if until(event):
            return


def test_stream_sse_initial_added_then_modified(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name = first_app(repo, "prod")
    headers = {**AUTH, "Accept": "text/event-stream"}
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications", headers=headers, stream=True, timeout=10
    )
    assert response.headers["Content-Type"] == "text/event-stream"
    lines = response.iter_lines(decode_unicode=True)
    raw = next(lines)
    assert raw.startswith("data: {") and raw.endswith("} ")
    events: list[dict[str, Any]] = [json.loads(raw[6:])]
    total = len(repo.apps) * len(repo.clusters)
    _read_stream(lines, lambda e: len(events) + 1 >= total, events)
    assert {e["result"]["type"] for e in events} == {"ADDED"}
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    _read_stream(lines, lambda e: e["result"]["application"]["metadata"]["name"] == name, events)
    assert events[-1]["result"]["type"] == "MODIFIED"
    response.close()


def test_stream_initial_burst_is_sorted_and_keeps_generic_fields_like_history(
    argo: ArgoCDEmulator, repo: GeneratedRepo
) -> None:
    # API.md section 6: without resourceVersion one ADDED per app, sorted by name; stream `fields`
    # are generic paths (section 5), so status.history survives where the list's whitelist drops it.
    fields = "result.type,result.application.metadata.name,result.application.status.history"
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications",
        headers=AUTH,  # no SSE Accept header: newline-delimited JSON
        params={"fields": fields},
        stream=True,
        timeout=10,
    )
    events: list[dict[str, Any]] = []
    total = len(repo.apps) * len(repo.clusters)
    _read_stream(response.iter_lines(decode_unicode=True), lambda e: len(events) >= total, events)
    response.close()

    names = [e["result"]["application"]["metadata"]["name"] for e in events]
    assert names == sorted(names) and len(set(names)) == total
    assert {e["result"]["type"] for e in events} == {"ADDED"}
    full = {name: get(argo, f"/api/v1/applications/{name}").json() for name in names}
    assert any(full[n]["status"].get("history") for n in names)
    for event in events:
        app = event["result"]["application"]
        assert set(app) <= {"metadata", "status"} and set(app["metadata"]) == {"name"}
        assert app.get("status", {}).get("history") == full[app["metadata"]["name"]]["status"].get("history")


def test_stream_from_resource_version_with_fields(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    name = first_app(repo, "prod")
    rv = get(argo, "/api/v1/applications?fields=items.metadata.name").json()["metadata"]["resourceVersion"]
    params = {
        "resourceVersion": rv,
        "selector": "env=prod",
        "fields": "result.type,result.application.metadata.name,result.application.status.sync.status",
    }
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications", headers=AUTH, params=params, stream=True, timeout=10
    )
    events: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=_read_stream,
        args=(
            response.iter_lines(decode_unicode=True),
            lambda e: e["result"]["application"]["metadata"]["name"] == name,
            events,
        ),
        daemon=True,
    )
    reader.start()
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()
    reader.join(timeout=5)
    assert events, "no event received"
    assert all(e["result"]["type"] == "MODIFIED" for e in events)  # no initial ADDED replay
    assert events[-1] == {
        "result": {
            "type": "MODIFIED",
            "application": {"metadata": {"name": name}, "status": {"sync": {"status": "OutOfSync"}}},
        }
    }
    assert all("-prod-" in e["result"]["application"]["metadata"]["name"] for e in events)
    response.close()


def test_stream_skips_an_event_identical_after_fields_to_the_one_last_sent(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path
) -> None:
    rv = get(argo, "/api/v1/applications?fields=items.metadata.name").json()["metadata"]["resourceVersion"]
    fields = ",".join(
        f"result.{path}"
        for path in (
            "type",
            "application.metadata.name",
            "application.status.sync.status",
            "application.status.operationState.phase",
            "application.status.operationState.startedAt",
        )
    )
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications",
        headers={**AUTH, "Accept": "text/event-stream"},
        params={"resourceVersion": rv, "fields": fields},
        stream=True,
        timeout=10,
    )
    events: list[dict[str, Any]] = []

    def read() -> None:
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):  # closed below
            _read_stream(response.iter_lines(decode_unicode=True), lambda e: False, events)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    apps = len(argo.apps)
    # Every commit moves every app's sync revision. The first one after connecting: each app once
    # (nothing was sent for it on this stream yet) ...
    commit_change(repo.path, tmp_path, overlay_path(first_app(repo, "prod")), bump_tag, "one")
    argo.reconcile()
    deadline = time.monotonic() + 5
    while len({e["result"]["application"]["metadata"]["name"] for e in events}) < apps:
        assert time.monotonic() < deadline, "not every app was streamed once"
        time.sleep(0.05)
    # ... then only the apps whose selected fields moved: without sync.revision, the synced app.
    time.sleep(0.3)
    seen = len(events)
    changed = first_app(repo, "stage")
    commit_change(repo.path, tmp_path, overlay_path(changed), bump_tag, "two")
    argo.reconcile()
    time.sleep(1)
    response.close()
    later = {e["result"]["application"]["metadata"]["name"] for e in events[seen:]}
    assert later == {changed}


def test_a_sync_after_a_commit_is_not_streamed_behind_the_refresh_of_every_app(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Argo CD refreshes the apps of a new commit one by one while its API server streams each update,
    # so the sync that follows reaches a watcher at once. The emulator refreshes all apps in one step:
    # it lets the open streams deliver that refresh before it syncs.
    rv = get(argo, "/api/v1/applications?fields=items.metadata.name").json()["metadata"]["resourceVersion"]
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications",
        headers={**AUTH, "Accept": "text/event-stream"},
        params={"resourceVersion": rv, "fields": "result.type,result.application.metadata.name"},
        stream=True,
        timeout=10,
    )
    events: list[dict[str, Any]] = []

    def read() -> None:
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):  # closed below
            _read_stream(response.iter_lines(decode_unicode=True), lambda e: False, events)

    threading.Thread(target=read, daemon=True).start()
    wait_until = time.monotonic() + 5
    while not argo.hub._positions:  # the stream is open (it reports its position once idle)
        assert time.monotonic() < wait_until
        time.sleep(0.02)
    at_sync: list[tuple[int, list[int]]] = []
    finish = argo._finish_operation

    def recording(app: Any, op: Any, started: float, now: float) -> None:
        at_sync.append(
            (max(e.rv for e in argo.hub._events if e.type == "MODIFIED"), list(argo.hub._positions.values()))
        )
        finish(app, op, started, now)

    refreshed: list[int] = []
    follow = argo._follow_head
    monkeypatch.setattr(argo, "_follow_head", lambda head: (follow(head), refreshed.append(argo.rv)))
    monkeypatch.setattr(argo, "_finish_operation", recording)
    commit_change(repo.path, tmp_path, overlay_path(first_app(repo, "dev")), bump_tag, "bump")
    argo.reconcile()
    response.close()
    assert refreshed and at_sync, "the commit was not followed and synced"
    # When the sync finished, the stream had handled every refresh event (sent or skipped).
    assert all(position >= refreshed[0] for position in at_sync[0][1])


def test_idle_streams_wait_quietly(argo: ArgoCDEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each stream reports its position to the hub; a report must not wake the other streams (two
    # idle streams would otherwise wake each other in a busy loop).
    calls: list[float] = []
    since = argo.hub.since
    monkeypatch.setattr(
        argo.hub, "since", lambda rv, timeout: (calls.append(time.monotonic()), since(rv, timeout))[1]
    )
    responses = [
        requests.get(
            f"{argo.base_url}/api/v1/stream/applications?resourceVersion={argo.rv}",
            headers=AUTH,
            stream=True,
            timeout=10,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)
    calls.clear()
    time.sleep(1.0)
    for response in responses:
        response.close()
    assert len(calls) <= 2 * 6  # about one wait of 0.25 s per stream and loop


def test_a_filtered_stream_does_not_render_the_apps_it_leaves_out(
    argo: ArgoCDEmulator, repo: GeneratedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox.argocd.model import AppState

    name = first_app(repo, "stage")
    rv = get(argo, "/api/v1/applications?fields=items.metadata.name").json()["metadata"]["resourceVersion"]
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications",
        headers=AUTH,
        params={
            "resourceVersion": rv,
            "selector": f"app.kubernetes.io/name={repo.apps[0].name},env=stage",
            "fields": "result.type,result.application.metadata.name",
        },
        stream=True,
        timeout=10,
    )
    events: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=_read_stream,
        args=(
            response.iter_lines(decode_unicode=True),
            lambda e: e["result"]["application"]["metadata"]["name"] == name,
            events,
        ),
        daemon=True,
    )
    reader.start()
    time.sleep(0.3)
    rendered: list[str] = []
    render = AppState._render
    here = threading.current_thread()

    def counted(self: AppState) -> dict[str, Any]:
        if threading.current_thread() is not here:  # the stream's; reconcile renders what it changed
            rendered.append(self.name)
        return render(self)

    monkeypatch.setattr(AppState, "_render", counted)
    commit_change(repo.path, tmp_path, overlay_path(name), bump_tag, "bump")
    argo.reconcile()  # the open streams deliver the refresh before it goes on (and renders the rest)
    reader.join(timeout=5)
    time.sleep(0.3)  # the stream has gone through every event of the commit
    response.close()
    assert events and {e["result"]["application"]["metadata"]["name"] for e in events} == {name}
    # Every app moved (a new head); none of the others was rendered for the stream.
    assert set(rendered) == {name}
    assert argo.apps[name].selection() == {
        "metadata": {k: argo.apps[name].to_json()["metadata"][k] for k in ("name", "namespace", "labels")},
        "spec": {
            k: v
            for k, v in argo.apps[name].to_json()["spec"].items()
            if k in ("project", "source", "sources")
        },
    }


def test_field_mask_projects_like_each_path_in_turn() -> None:
    from sandbox.argocd.query import compile_paths, project_mask

    app = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"project": "p", "source": {"path": "d"}}}
    message = {"result": {"type": "MODIFIED", "application": app}}
    mask = compile_paths(
        [
            "result.type",
            "result.application.metadata.name",
            "result.application.spec",
            "result.application.spec.project",  # inside a selected value: adds nothing
            "result.application.status.sync.revision",  # absent: no empty parents
        ]
    )
    projected = project_mask(message, mask)
    assert projected == {
        "result": {"type": "MODIFIED", "application": {"metadata": {"name": "a"}, "spec": app["spec"]}}
    }
    assert message["result"]["application"] is app and app["metadata"] == {"name": "a", "labels": {"x": "1"}}


def test_stream_ends_cleanly_on_stop(start: Callable[..., ArgoCDEmulator]) -> None:
    argo = start(keepalive_interval=0.1)
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications?resourceVersion=999999",
        headers={**AUTH, "Accept": "text/event-stream"},
        stream=True,
        timeout=10,
    )
    lines = response.iter_lines(decode_unicode=True)
    assert next(lines) == ":"  # keep-alive
    started = time.monotonic()
    argo.stop()
    assert list(lines) is not None
    assert time.monotonic() - started < 3


# ---- clusters, projects, appsets, admin ----------------------------------------------------------------------


def test_clusters_and_cluster_by_server(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    items = get(argo, "/api/v1/clusters").json()["items"]
    labelled = [c for c in items if c.get("labels")]
    assert {c["name"] for c in labelled} == {c.name for c in repo.clusters}
    assert all(set(c["labels"]) == {"env", "region", "tier"} for c in labelled)
    server = labelled[0]["server"]
    one = get(argo, "/api/v1/clusters/" + requests.utils.quote(server, safe=""))
    assert one.status_code == 200 and one.json()["server"] == server
    assert get(argo, f"/api/v1/clusters/{labelled[0]['name']}?id.type=name").json()["server"] == server
    assert (
        get(argo, "/api/v1/clusters", params={"server": server}).json()["items"][0]["name"]
        == labelled[0]["name"]
    )


def test_projects_and_appsets(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    projects = {p["metadata"]["name"] for p in get(argo, "/api/v1/projects").json()["items"]}
    assert set(repo.teams) | {"default"} == projects
    assert get(argo, "/api/v1/projects/nope").status_code == 404
    appsets = get(argo, "/api/v1/applicationsets").json()["items"]
    assert len(appsets) == len(repo.apps) * len(repo.envs)
    assert get(argo, f"/api/v1/applicationsets/{appsets[0]['metadata']['name']}").status_code == 200


def test_admin_state_and_reconcile(argo: ArgoCDEmulator, repo: GeneratedRepo) -> None:
    state = requests.get(f"{argo.base_url}/sandbox/state", timeout=5).json()
    assert state["head"] == repo.head_sha
    assert {a["health"] for a in state["applications"]} == {"Healthy"}
    assert requests.post(f"{argo.base_url}/sandbox/reconcile", timeout=5).json()["head"] == repo.head_sha


def test_state_file_keeps_history_across_restarts(
    start: Callable[..., ArgoCDEmulator], repo: GeneratedRepo, tmp_path: Path
) -> None:
    state_file = tmp_path / "argo-state.json"
    first = start(state_file=state_file, auto_sync_envs=("dev",))
    name = first_app(repo, "prod")
    post(first, f"/api/v1/applications/{name}/sync", {})
    first.reconcile()
    history = app_json(first, name)["status"]["history"]
    first.stop()
    second = start(state_file=state_file, auto_sync_envs=("dev",))
    assert app_json(second, name)["status"]["history"] == history


# ---- contract tests against the real swagger ---------------------------------------------------------------------


def test_contract_applications(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    validate("v1alpha1ApplicationList", get(argo, "/api/v1/applications").json())
    validate(
        "v1alpha1ApplicationList",
        get(argo, "/api/v1/applications?fields=items.metadata.name,items.spec").json(),
    )
    name = first_app(repo, "prod")
    validate("v1alpha1Application", app_json(argo, name))
    validate("v1alpha1Application", app_json(argo, first_app(repo, "prod", multi=True)))
    pending = post(argo, f"/api/v1/applications/{name}/sync", {"dryRun": True}).json()
    assert pending["operation"]["sync"]["dryRun"] is True
    validate("v1alpha1Application", pending)
    argo.reconcile()
    validate("v1alpha1Application", app_json(argo, name))
    validate("v1alpha1ApplicationTree", get(argo, f"/api/v1/applications/{name}/resource-tree").json())
    validate(
        "applicationManagedResourcesResponse",
        get(argo, f"/api/v1/applications/{name}/managed-resources").json(),
    )
    validate(
        "applicationApplicationSyncWindowsResponse",
        get(argo, f"/api/v1/applications/{name}/syncwindows").json(),
    )
    sha = app_json(argo, name)["status"]["history"][-1]["revision"]
    validate(
        "v1alpha1RevisionMetadata", get(argo, f"/api/v1/applications/{name}/revisions/{sha}/metadata").json()
    )


def test_contract_other_objects(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    team = repo.apps[0].team
    requests.post(f"{argo.base_url}/sandbox/faults", json={"deny_sync_window": {"project": team}}, timeout=5)
    validate("v1alpha1ClusterList", get(argo, "/api/v1/clusters").json())
    validate("v1alpha1AppProjectList", get(argo, "/api/v1/projects").json())
    validate("v1alpha1AppProject", get(argo, f"/api/v1/projects/{team}").json())
    validate("projectSyncWindowsResponse", get(argo, f"/api/v1/projects/{team}/syncwindows").json())
    validate("v1alpha1ApplicationSetList", get(argo, "/api/v1/applicationsets").json())
    validate("versionVersionMessage", get(argo, "/api/version").json())
    validate("sessionGetUserInfoResponse", get(argo, "/api/v1/session/userinfo").json())
    validate(
        "sessionSessionResponse",
        post(argo, "/api/v1/session", {"username": "admin", "password": "sandbox"}).json(),
    )
    validate("runtimeError", get(argo, "/api/v1/applications/nope").json())
    validate("runtimeError", get(argo, "/api/v1/applications", headers={}).json())


def test_contract_stream_event(argo: ArgoCDEmulator, validate: Callable[[str, Any], None]) -> None:
    response = requests.get(
        f"{argo.base_url}/api/v1/stream/applications", headers=AUTH, stream=True, timeout=10
    )
    event = json.loads(next(response.iter_lines()))
    response.close()
    validate("v1alpha1ApplicationWatchEvent", event["result"])


def test_contract_catches_renamed_field(
    argo: ArgoCDEmulator, repo: GeneratedRepo, validate: Callable[[str, Any], None]
) -> None:
    app = app_json(argo, first_app(repo, "prod"))
    app["status"]["sync"]["revison"] = app["status"]["sync"].pop("revision")
    with pytest.raises(jsonschema.ValidationError):
        validate("v1alpha1Application", app)
    app = app_json(argo, first_app(repo, "prod"))
    app["status"]["history"][0]["deployedAt"] = "yesterday"
    with pytest.raises(jsonschema.ValidationError):
        validate("v1alpha1Application", app)
