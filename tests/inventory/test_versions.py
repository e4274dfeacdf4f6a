"""The version the inventory shows follows core.kustomize's one rule, for running and historic images."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.kustomize import image_version
from inventory.appstate import image_ref_version
from inventory.deployments import HistoricVersions
from tests.factories import GitRepositoryFactory

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("images", "version"),
    [
        ([], ""),
        (["ghcr.io/acme/api:1.4.2"], "1.4.2"),
        (["ghcr.io/acme/sidecar:9", "ghcr.io/acme/api:1.4.2"], "1.4.2"),
        (["ghcr.io/acme/sidecar:9", "ghcr.io/acme/worker:3"], "9"),  # no match: the first image
        ([f"ghcr.io/acme/api:1.4.2@{DIGEST}"], DIGEST),
        (["ghcr.io/acme/api"], "latest"),
    ],
)
def test_running_image_version(images, version):
    assert image_ref_version(images, "api") == version


def test_a_registry_port_is_not_taken_for_a_tag():
    # Before: "registry.local:5000/api" was read as repository "registry.local", so the app's
    # image was not found and the sidecar's tag was shown as the app's version.
    images = ["registry.local:5000/sidecar:9", "registry.local:5000/api"]
    assert image_ref_version(images, "api") == "latest"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _mirror_with(settings, tmp_path: Path, path: str, text: str) -> tuple[object, str]:
    """Create the repository's mirror with one commit holding `path`/kustomization.yaml."""
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    repo = GitRepositoryFactory()
    bare = settings.MIRRORS_DIR / f"{repo.name}.git"
    bare.parent.mkdir()
    _git(tmp_path, "init", "-q", "--bare", str(bare))
    work = tmp_path / "work"
    _git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / path).mkdir(parents=True)
    (work / path / "kustomization.yaml").write_text(text)
    _git(work, "add", "-A")
    _git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "pin")
    _git(work, "push", "-q", str(bare), "main")
    return repo, _git(work, "rev-parse", "HEAD")


def test_historic_versions_read_the_overlay_with_the_one_reader(settings, tmp_path):
    # Unquoted 1.10 is the tag "1.10" (a YAML float reader made it "1.1"); the sidecar is listed first.
    text = "images:\n  - name: ghcr.io/acme/sidecar\n    newTag: '9'\n  - name: ghcr.io/acme/api\n    newTag: 1.10\n"
    repo, sha = _mirror_with(settings, tmp_path, "environments/prod/api", text)
    versions = HistoricVersions()
    assert versions.version(repo, sha, "environments/prod/api", "api") == "1.10"
    assert versions.version(repo, sha, "environments/prod/api", "api") == image_version(text, "api")


def test_a_broken_overlay_at_a_revision_has_no_version(settings, tmp_path):
    repo, sha = _mirror_with(settings, tmp_path, "app", "images: [\n")
    assert HistoricVersions().version(repo, sha, "app", "app") == ""
