"""Sandbox helpers for promotion tests: a generated GitOps repo served by the forge emulator,
the Argo CD emulator watching the same bare repo, and the inventory rows the poller writes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Group

from accounts.roles import ALL_ROLES
from inventory.models import Application, ArgoApplication, ArgoInstance, Environment, GitRepository
from sandbox.argocd import ArgoCDEmulator
from sandbox.forge import ForgeEmulator
from sandbox.repogen import GeneratedRepo, generate_repo

FORGE_TOKEN = "sandbox-forge-token"
ARGO_TOKEN = "sandbox-argocd-token"
WEBHOOK_SECRET = "promotions-webhook-secret"


@dataclass
class Sandbox:
    forge: ForgeEmulator
    argo: ArgoCDEmulator
    generated: GeneratedRepo
    bare: Path
    repository: GitRepository
    instance: ArgoInstance
    dev: Environment
    stage: Environment
    prod: Environment

    # -- forge helpers ------------------------------------------------------------------------
    def forge_state(self) -> dict[str, Any]:
        return requests.get(f"{self.forge.base_url}/sandbox/state", timeout=10).json()["repos"]["acme/gitops"]

    def pulls(self) -> list[dict[str, Any]]:
        return self.forge_state()["pulls"]

    def branches(self) -> list[str]:
        return list(self.forge_state()["branches"])

    def fault(self, **data: Any) -> None:
        requests.post(f"{self.forge.base_url}/sandbox/faults", json=data, timeout=10).raise_for_status()

    def merge(self, number: int) -> dict[str, Any]:
        resp = requests.post(
            f"{self.forge.base_url}/sandbox/pulls/acme/gitops/{number}/merge", json={}, timeout=20
        )
        resp.raise_for_status()
        return resp.json()

    def pr_diff(self, number: int) -> str:
        pull = next(p for p in self.pulls() if p["number"] == number)
        return git(self.bare, "diff", f"{pull['base_sha']}...{pull['head_sha']}")

    # -- argo helpers -------------------------------------------------------------------------
    def argo_fault(self, **data: Any) -> None:
        resp = requests.post(
            f"{self.argo.base_url}/sandbox/faults",
            json=data,
            timeout=10,
            headers={"Authorization": f"Bearer {ARGO_TOKEN}"},
        )
        resp.raise_for_status()

    def reconcile(self) -> None:
        self.argo.reconcile()

    def poll(self) -> None:
        """Run the inventory poller once (app x env x cluster → Argo CD app rows)."""
        from inventory.poll import instance_poll

        result = instance_poll(instance_id=self.instance.pk)
        assert not result.error, result.error

    def app(self, name: str | None = None) -> Application:
        if name is None:
            name = self.generated.apps[0].name
        return Application.objects.get(name=name)

    def file(self, rev: str, path: str) -> str:
        return git(self.bare, "show", f"{rev}:{path}")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def _groups() -> None:
    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)


def make_sandbox(
    tmp_path: Path,
    *,
    apps: int = 3,
    sync_windows: dict | None = None,
    rollout_apps: int = 0,
    helm_apps: int = 0,
    argo_options: dict | None = None,
) -> Sandbox:
    repos = tmp_path / "forge"
    bare = repos / "acme" / "gitops.git"
    generated = generate_repo(
        bare, apps=apps, clusters=1, commits=80, seed=11, rollout_apps=rollout_apps, helm_apps=helm_apps
    )
    forge = ForgeEmulator(repos, token=FORGE_TOKEN, webhook_secret=WEBHOOK_SECRET)
    base = forge.start()
    argo = ArgoCDEmulator(
        repo_path=bare,
        repo_url=f"{base}/acme/gitops.git",
        token=ARGO_TOKEN,
        reconcile_interval=0.3,
        sync_windows=sync_windows if sync_windows is not None else {},
        **(argo_options or {}),
    )
    argo.start()
    dev = Environment.objects.create(name="dev", order=10)
    stage = Environment.objects.create(name="stage", order=20)
    prod = Environment.objects.create(
        name="prod", order=30, requires_approval=True, approvals_required=1, production_like=True
    )
    repository = GitRepository.objects.create(
        name="gitops",
        url=f"{base}/acme/gitops.git",
        api_url=base,
        full_name="acme/gitops",
        web_url=f"{base}/acme/gitops",
        token=FORGE_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        allow_http=True,
        forge_kind="github",
    )
    instance = ArgoInstance.objects.create(
        name="sandbox", url=argo.base_url, token=ARGO_TOKEN, allow_http=True
    )
    box = Sandbox(forge, argo, generated, bare, repository, instance, dev, stage, prod)
    box.poll()
    assert ArgoApplication.objects.filter(environment=prod).exists(), "the poller mapped no prod apps"
    Application.objects.update(repository=repository)
    return box


def promotable_app(box: Sandbox) -> Application:
    """An app whose stage version differs from prod (something to promote)."""
    from promotions import observed

    for spec in box.generated.apps:
        app = Application.objects.get(name=spec.name)
        stage = observed.env_state(app, box.stage)
        prod = observed.env_state(app, box.prod)
        if stage.images and stage.images != prod.images:
            return app
    pytest.skip("the generated repo has no app with stage ≠ prod")
