"""Reusable sandbox fixtures: the demo repo, the forge and the Argo CD emulator, in-process.

Use them from any test package:

    # tests/<area>/conftest.py
    from tests.sandbox_fixtures import *  # noqa: F403  (fixtures + helpers)

Fixtures (all function-scoped, each test gets fresh emulators on free ports):
- ``sandbox_repo`` -> GeneratedRepo: a bare demo repo at ``<tmp>/repos/acme/gitops.git``
  (override ``sandbox_repo_options`` to change apps/clusters/commits/seed).
- ``forge`` -> ForgeEmulator serving ``<tmp>/repos`` (clone URL: ``forge.base_url + "/acme/gitops.git"``).
- ``argocd`` -> ArgoCDEmulator over the same bare repo, reconciling every 0.2 s, with
  ``argocd_options`` passed through (e.g. ``{"multi_source_apps": ["ledger"]}``).
- ``sandbox_env`` -> dict of the SANDBOX_* variables config/sandbox.yaml reads (ports of the above).
- ``sandbox_config`` -> PortalConfig parsed from config/sandbox.yaml against those emulators.
- ``mirrors_dir`` -> settings.MIRRORS_DIR pointed at a temporary directory.
- ``sandbox_inventory`` -> (needs db) config applied, repository ingested, instance polled once:
  a SandboxInventory with ``.repo .forge .argocd .config .instance .repository``.

Helpers: ``commit_files(repo_path, files, message, ...)`` writes a commit straight into the bare
repo (optionally a --no-ff merge of a ``promote/...`` branch) and returns its SHA;
``set_image_tag(text, tag)`` rewrites a kustomization's ``newTag``; ``read_file(repo_path, path)``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_CONFIG = ROOT / "config" / "sandbox.yaml"
ARGOCD_TOKEN = "sandbox-argocd-token"
FORGE_TOKEN = "sandbox-forge-token"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


# ---------------------------------------------------------------------------------------------
# Git helpers (plumbing on the bare repo: no working tree needed)


def _git(repo: Path, *args: str, input_text: str | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **GIT_IDENTITY, **(env or {})}
    proc = subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def read_file(repo_path: str | Path, path: str, ref: str = "main") -> str:
    """Return a file's text at a ref of the bare repo."""
    return _git(Path(repo_path), "show", f"{ref}:{path}")


def set_image_tag(kustomization: str, tag: str) -> str:
    """Return a kustomization.yaml with its (first) image pinned to ``tag``."""
    if re.search(r"newTag:", kustomization):
        return re.sub(r'newTag:\s*"?[^"\n]*"?', f'newTag: "{tag}"', kustomization, count=1)
    return re.sub(r"digest:\s*\S+", f'newTag: "{tag}"', kustomization, count=1)


def _tree_with(repo: Path, parent: str, files: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", parent, env=env)
        for path, text in files.items():
            blob = _git(repo, "hash-object", "-w", "--stdin", input_text=text)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        return _git(repo, "write-tree", env=env)


def commit_files(
    repo_path: str | Path,
    files: dict[str, str],
    message: str,
    *,
    branch: str = "main",
    merge_branch: str | None = None,
    author: tuple[str, str] | None = None,
) -> str:
    """Commit ``files`` on top of ``branch`` in a bare repo and return the new head SHA.

    With ``merge_branch`` (e.g. ``"promote/ledger-1.2.3-prod"``) the change is first committed on
    that branch and then merged into ``branch`` with a --no-ff merge commit, like a merged PR.
    """
    repo = Path(repo_path)
    head = _git(repo, "rev-parse", f"refs/heads/{branch}")
    env = {}
    if author:
        env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]}
    tree = _tree_with(repo, head, files)
    if merge_branch is None:
        sha = _git(repo, "commit-tree", tree, "-p", head, input_text=message, env=env)
    else:
        side = _git(repo, "commit-tree", tree, "-p", head, input_text=message, env=env)
        _git(repo, "update-ref", f"refs/heads/{merge_branch}", side)
        merge_message = f"Merge pull request #1 from acme/{merge_branch}\n\n{message}"
        sha = _git(repo, "commit-tree", tree, "-p", head, "-p", side, input_text=merge_message, env=env)
    _git(repo, "update-ref", f"refs/heads/{branch}", sha, head)
    return sha


# ---------------------------------------------------------------------------------------------
# Emulators


@pytest.fixture
def sandbox_repo_options() -> dict[str, Any]:
    """Options for generate_repo; override in a conftest or test module for other shapes."""
    return {"apps": 4, "clusters": 1, "commits": 80, "seed": 7}


@pytest.fixture
def sandbox_repo(tmp_path: Path, sandbox_repo_options: dict[str, Any]):
    """Generate the demo GitOps repo as ``<tmp>/repos/acme/gitops.git``."""
    from sandbox.repogen import generate_repo

    return generate_repo(tmp_path / "repos" / "acme" / "gitops.git", **sandbox_repo_options)


@pytest.fixture
def forge(sandbox_repo) -> Iterator[Any]:
    """Start the forge emulator serving the demo repo over smart HTTP."""
    from sandbox.forge import ForgeEmulator

    emulator = ForgeEmulator(repos_dir=sandbox_repo.path.parent.parent, token=FORGE_TOKEN)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def argocd_options() -> dict[str, Any]:
    """Extra ArgoCDEmulator keyword arguments (override per module or via parametrisation)."""
    return {}


@pytest.fixture
def argocd(sandbox_repo, forge, argocd_options: dict[str, Any]) -> Iterator[Any]:
    """Start the Argo CD emulator over the demo repo (apps point at the forge's clone URL)."""
    from sandbox.argocd.emulator import ArgoCDEmulator

    options = {"reconcile_interval": 0.2, "sync_windows": {}, **argocd_options}
    emulator = ArgoCDEmulator(
        repo_path=sandbox_repo.path,
        repo_url=f"{forge.base_url}/acme/gitops.git",
        token=ARGOCD_TOKEN,
        **options,
    )
    emulator.start()
    yield emulator
    emulator.stop()


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/", 1)[0]


@pytest.fixture
def sandbox_env(argocd, forge, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point config/sandbox.yaml's ${SANDBOX_*} variables at the running emulators."""
    values = {
        "SANDBOX_ARGOCD_PORT": _port(argocd.base_url),
        "SANDBOX_FORGE_PORT": _port(forge.base_url),
        "SANDBOX_ARGOCD_TOKEN": ARGOCD_TOKEN,
        "SANDBOX_FORGE_TOKEN": FORGE_TOKEN,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def sandbox_config(sandbox_env):
    """Return config/sandbox.yaml parsed against the running emulators."""
    from inventory.config import load_config

    return load_config(str(SANDBOX_CONFIG))


@pytest.fixture
def mirrors_dir(settings, tmp_path: Path) -> Path:
    """Keep Git mirrors of this test under its temporary directory."""
    path = tmp_path / "mirrors"
    settings.MIRRORS_DIR = path
    return path


@dataclass
class SandboxInventory:
    repo: Any
    forge: Any
    argocd: Any
    config: Any
    instance: Any
    repository: Any

    def refresh(self) -> None:
        """Let the emulator converge now (follow the branch head, run auto-syncs)."""
        self.argocd.reconcile()
        self.argocd.reconcile()

    def poll(self):
        """Ingest the repository, then poll the instance once; return the PollResult."""
        from inventory.ingest import repository_ingest
        from inventory.poll import instance_poll

        repository_ingest(repository_id=self.repository.pk)
        return instance_poll(instance_id=self.instance.pk)


@pytest.fixture
def sandbox_inventory(db, sandbox_repo, forge, argocd, sandbox_config, mirrors_dir) -> SandboxInventory:
    """Apply config/sandbox.yaml, ingest the repo and poll the emulated Argo CD once."""
    from inventory.configapply import config_apply
    from inventory.ingest import repository_ingest
    from inventory.models import ArgoInstance, GitRepository
    from inventory.poll import instance_poll

    config_apply(config=sandbox_config)
    repository = GitRepository.objects.get(name="gitops")
    instance = ArgoInstance.objects.get(name="sandbox")
    ingest = repository_ingest(repository_id=repository.pk)
    assert ingest.ok, ingest.error
    poll = instance_poll(instance_id=instance.pk)
    assert poll.ok, poll.error
    return SandboxInventory(sandbox_repo, forge, argocd, sandbox_config, instance, repository)


__all__ = [
    "SandboxInventory",
    "argocd",
    "argocd_options",
    "commit_files",
    "forge",
    "mirrors_dir",
    "read_file",
    "sandbox_config",
    "sandbox_env",
    "sandbox_inventory",
    "sandbox_repo",
    "sandbox_repo_options",
    "set_image_tag",
]
