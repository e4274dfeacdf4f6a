"""Helpers of the rollback tests: a live sandbox: demo repo on the forge emulator, Argo CD emulator, inventory.

Built from sandbox.repogen + sandbox.forge.ForgeEmulator + sandbox.argocd.ArgoCDEmulator, polled
into the inventory with the real poller and Git ingest. Replace with tests/sandbox_fixtures.py
once the inventory engineer publishes it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from integrations.forges import forge_client
from integrations.gitrepo import GitWorkspace
from inventory.models import ArgoApplication, ArgoInstance, Deployment, Environment, GitRepository
from sandbox.argocd.emulator import ArgoCDEmulator
from sandbox.forge import ForgeEmulator
from sandbox.repogen import generate_repo

FORGE_TOKEN = "sandbox-forge-token"
ARGO_TOKEN = "sandbox-argocd-token"
OWNER, NAME = "acme", "gitops"


@dataclass
class Sandbox:
    tmp: Path
    forge: ForgeEmulator
    argocd: ArgoCDEmulator
    bare: Path
    app: str  # an app pinned by tag (not digest)
    team: str
    repository: GitRepository
    instance: ArgoInstance
    envs: dict[str, Environment] = field(default_factory=dict)
    _ws_count: int = 0

    @property
    def clone_url(self) -> str:
        return f"{self.forge.base_url}/{OWNER}/{NAME}.git"

    def client(self):
        return forge_client("github", self.forge.base_url, FORGE_TOKEN, f"{OWNER}/{NAME}", allow_http=True)

    # -- Git ----------------------------------------------------------------------------------
    def workspace(self, branch: str = "main") -> GitWorkspace:
        self._ws_count += 1
        return GitWorkspace.clone(
            self.clone_url,
            self.tmp / f"ws-{self._ws_count}",
            branch=branch,
            token=FORGE_TOKEN,
            allow_http=True,
        )

    def env_file(self, env: str, app: str | None = None) -> str:
        return f"environments/{env}/{app or self.app}/kustomization.yaml"

    def set_tag(self, ws: GitWorkspace, env: str, tag: str, app: str | None = None) -> None:
        path = self.env_file(env, app)
        text = ws.read_file(path).decode()
        text, count = re.subn(r'newTag: "[^"]*"', f'newTag: "{tag}"', text)
        assert count == 1, text
        ws.write_file(path, text)

    def commit_tag(self, env: str, tag: str, *, message: str | None = None, app: str | None = None) -> str:
        """Commit a new image tag for an env straight to main; return the commit SHA."""
        ws = self.workspace()
        self.set_tag(ws, env, tag, app)
        sha = ws.commit(
            message or f"{app or self.app}: {env} to {tag}", author_name="Dev", author_email="dev@example.com"
        )
        ws.push("main")
        return sha

    def promote_by_pr(self, env: str, tag: str, *, branch: str | None = None) -> tuple[int, str]:
        """Change the tag through a PR merged with a merge commit; return (PR number, merge SHA)."""
        branch = branch or f"promote/{self.app}/to-{env}/{tag}"
        ws = self.workspace()
        ws.create_branch(branch, ws.head())
        self.set_tag(ws, env, tag)
        ws.commit(
            f"Promote {self.app} to {tag} in {env}", author_name="Release", author_email="rm@example.com"
        )
        ws.push(branch)
        pr = self.client().create_pull_request(head=branch, base="main", title=f"Promote {tag}", body="")
        return pr.number, self.merge(pr.number)

    def merge(self, number: int) -> str:
        resp = requests.post(
            f"{self.forge.base_url}/sandbox/pulls/{OWNER}/{NAME}/{number}/merge", json={}, timeout=10
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["sha"]

    def head(self, branch: str = "main") -> str | None:
        return self.client().get_branch_sha(branch)

    def pulls(self, head: str) -> list:
        state = requests.get(f"{self.forge.base_url}/sandbox/state", timeout=10).json()
        return [p for p in state["repos"][f"{OWNER}/{NAME}"]["pulls"] if p["head_ref"] == head]

    # -- Argo CD + inventory -------------------------------------------------------------------
    def converge(self) -> None:
        """Let the emulated Argo CD follow main, then poll it and ingest Git into the inventory."""
        from inventory.ingest import repository_ingest
        from inventory.poll import instance_poll

        for _ in range(3):
            self.argocd.reconcile()
        result = repository_ingest(repository_id=self.repository.pk)
        for _ in range(5):
            # A worker's task may be fetching the same mirror (git: "cannot lock ref"); the beat's
            # next ingest would take it up, here the next try does.
            if result.ok or "cannot lock ref" not in (result.error or ""):
                break
            time.sleep(0.2)
            result = repository_ingest(repository_id=self.repository.pk)
        assert result.ok, result.error
        poll = instance_poll(instance_id=self.instance.pk)
        assert poll.ok, poll.error

    def argo_apps(self, env: str = "prod", app: str | None = None) -> list[ArgoApplication]:
        return list(
            ArgoApplication.objects.filter(application__name=app or self.app, environment__name=env).order_by(
                "name"
            )
        )

    def newest_deployment(self, env: str = "prod") -> Deployment | None:
        return (
            Deployment.objects.filter(application__name=self.app, environment__name=env)
            .order_by("-deployed_at", "-history_id", "-id")
            .first()
        )


def _build(tmp: Path) -> tuple[ForgeEmulator, ArgoCDEmulator, Path, object]:
    repos = tmp / "repos"
    bare = repos / OWNER / f"{NAME}.git"
    generated = generate_repo(bare, apps=3, clusters=1, commits=40, seed=11)
    forge = ForgeEmulator(repos)
    forge.start()
    argocd = ArgoCDEmulator(
        repo_path=bare,
        repo_url=f"{forge.base_url}/{OWNER}/{NAME}.git",
        reconcile_interval=0.2,
        sync_windows={},
    )
    argocd.start()
    return forge, argocd, bare, generated


def _db_rows(forge: ForgeEmulator, argocd: ArgoCDEmulator, *, auto_merge: bool) -> tuple:
    envs = {
        "dev": Environment.objects.create(name="dev", order=10),
        "stage": Environment.objects.create(name="stage", order=20),
        "prod": Environment.objects.create(
            name="prod",
            order=30,
            production_like=True,
            requires_approval=True,
            rollback_auto_merge=auto_merge,
        ),
    }
    repository = GitRepository.objects.create(
        name="gitops",
        url=f"{forge.base_url}/{OWNER}/{NAME}.git",
        full_name=f"{OWNER}/{NAME}",
        api_url=forge.base_url,
        web_url=f"{forge.base_url}/{OWNER}/{NAME}",
        forge_kind="github",
        token=FORGE_TOKEN,
        allow_http=True,
    )
    instance = ArgoInstance.objects.create(
        name="sandbox", url=argocd.base_url, token=ARGO_TOKEN, allow_http=True
    )
    return envs, repository, instance


def make_sandbox(tmp: Path, *, auto_merge: bool = False):
    forge, argocd, bare, generated = _build(tmp)
    envs, repository, instance = _db_rows(forge, argocd, auto_merge=auto_merge)
    spec = next(a for a in generated.apps if not a.uses_digest)
    sandbox = Sandbox(
        tmp=tmp,
        forge=forge,
        argocd=argocd,
        bare=bare,
        app=spec.name,
        team=spec.team,
        repository=repository,
        instance=instance,
        envs=envs,
    )
    sandbox.converge()
    return sandbox


def oncall(project: str, username: str = "oncall", environment: str = "*"):
    from accounts.models import RoleGrant
    from tests.factories import UserFactory

    user = UserFactory(username=username)
    RoleGrant.objects.create(user=user, role="oncall", project=project, environment=environment)
    return user
