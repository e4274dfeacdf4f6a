"""ArgoCDClient.manifests against the sandbox Argo CD (GetManifests): single and multi-source apps,
and every failure as a RenderError carrying Argo CD's message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from integrations.argocd import ArgoCDClient, RenderError
from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import GeneratedRepo, generate_repo
from tests.sandbox.test_argocd_emulator import REPO_URL, bump_tag, commit_change

TOKEN = "sandbox-argocd-token"


@pytest.fixture
def repo(tmp_path: Path) -> GeneratedRepo:
    return generate_repo(tmp_path / "gitops.git", apps=2, clusters=1, commits=30, seed=5, helm_apps=1)


@pytest.fixture
def argo(repo: GeneratedRepo) -> Iterator[ArgoCDEmulator]:
    emu = ArgoCDEmulator(repo.path, REPO_URL, reconcile_interval=60.0, sync_windows={})
    emu.start()
    yield emu
    emu.stop()


def _name(repo: GeneratedRepo, index: int) -> str:
    cluster = next(c for c in repo.clusters if c.env == "prod")
    return f"{repo.apps[index].name}-{cluster.name}"


def _client(argo: ArgoCDEmulator, timeout: tuple[float, float] = (5, 10)) -> ArgoCDClient:
    return ArgoCDClient(argo.base_url, TOKEN, allow_http=True, timeout=timeout)


def test_manifests_of_a_kustomize_app_at_a_revision(argo, repo, tmp_path):
    app = repo.apps[0]
    before = argo.head
    after = commit_change(
        repo.path, tmp_path, f"environments/prod/{app.name}/kustomization.yaml", bump_tag, "Promote"
    )
    now = _client(argo).manifests(_name(repo, 0), revision=before)
    then = _client(argo).manifests(_name(repo, 0), revision=after)
    assert (now.revision, then.revision) == (before, after)
    assert then.source_type == "Kustomize" and then.namespace == f"{app.team}-{app.name}"
    kinds = sorted(o["kind"] for o in then.objects)
    assert "Deployment" in kinds and "Service" in kinds
    image = lambda objs: next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"][  # noqa: E731
        "containers"
    ][0]["image"]
    assert image(now.objects) != image(then.objects)


def test_manifests_of_a_multi_source_helm_app_by_source_position(argo, repo):
    name = _name(repo, 2)
    head = argo.head
    result = _client(argo).manifests(name, revisions=[head, head], source_positions=[1, 2])
    assert result.source_type == "Helm"
    assert {o["kind"] for o in result.objects} >= {"Deployment", "ConfigMap", "Service"}
    with pytest.raises(ValueError):
        _client(argo).manifests(name, revisions=[head], source_positions=[1, 2])


def test_an_unknown_revision_is_a_render_error_with_argocds_message(argo, repo):
    with pytest.raises(RenderError) as caught:
        _client(argo).manifests(_name(repo, 0), revision="0" * 40)
    assert "unable to resolve" in str(caught.value) and not caught.value.transient
    assert caught.value.status == 500


def test_a_broken_overlay_is_argocds_manifest_generation_error(argo, repo, tmp_path):
    app = repo.apps[0]
    broken = commit_change(
        repo.path,
        tmp_path,
        f"environments/prod/{app.name}/kustomization.yaml",
        lambda t: t.replace("resources:\n", "resources:\n  - missing.yaml\n", 1),
        "Break the overlay",
    )
    with pytest.raises(RenderError) as caught:
        _client(argo).manifests(_name(repo, 0), revision=broken)
    message = str(caught.value)
    assert "Manifest generation error" in message and "missing.yaml" in message
    assert not caught.value.transient


def _fault(argo: ArgoCDEmulator, **data) -> None:
    requests.post(
        f"{argo.base_url}/sandbox/faults", json=data, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).raise_for_status()


def test_a_timeout_and_a_503_are_transient_render_errors(argo, repo):
    _fault(argo, timeout=True, timeout_s=3, paths=["/api/v1/applications/*/manifests"])
    with pytest.raises(RenderError) as caught:
        _client(argo, timeout=(2, 1)).manifests(_name(repo, 0))
    assert caught.value.transient
    _fault(argo, timeout=False, error_rate=1.0, status=503)
    with pytest.raises(RenderError) as caught:
        _client(argo).manifests(_name(repo, 0))
    assert caught.value.transient and caught.value.status == 503


def test_an_unreachable_argocd_is_a_transient_render_error_and_a_blocking_verdict(argo, repo):
    """Argo CD unreachable (connection refused): a RenderError, and the change's gate blocks with it."""
    from changes.rendered import RenderedChange, rendered_verdict

    base_url = argo.base_url
    argo.stop()
    client = ArgoCDClient(base_url, TOKEN, allow_http=True, timeout=(1, 2))
    with pytest.raises(RenderError) as caught:
        client.manifests(_name(repo, 0), revision="main")
    assert caught.value.transient and str(caught.value)
    change = RenderedChange(
        _name(repo, 0), "prod/shop", "a" * 40, "b" * 40, error=str(caught.value), transient=True
    )
    verdict = rendered_verdict([change])
    assert not verdict.passed and verdict.transient
    assert verdict.detail == f"Argo CD cannot render: {_name(repo, 0)}: {caught.value}"
    assert change.diff is None and not change.ok  # never an empty diff
