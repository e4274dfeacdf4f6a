"""A synthetic fleet: the generated GitOps repo, the forge and the Argo CD emulator, in-process,
and the portal configured against them exactly as config/sandbox.yaml does in the demo."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .env import ROOT

ARGOCD_TOKEN = "sandbox-argocd-token"
FORGE_TOKEN = "sandbox-forge-token"
CLUSTERS_PER_ENV = 2
ENVS = 3


@dataclass
class Fleet:
    repo: Any  # sandbox.repogen.GeneratedRepo
    forge: Any
    argocd: Any
    instance_id: int = 0
    repository_id: int = 0
    generate_seconds: float = 0.0
    emulator_seconds: float = 0.0

    @property
    def bare(self) -> Path:
        return Path(self.repo.path)

    @property
    def argo_apps(self) -> int:
        return len(self.argocd.apps)

    def settle(self) -> None:
        """Let the emulator converge (follow the head, finish syncs) so the next poll sees a still fleet."""
        for _ in range(3):
            self.argocd.reconcile()

    def stop(self) -> None:
        for part in (self.argocd, self.forge):
            with contextlib.suppress(Exception):  # best effort at teardown
                part.stop()


GENERATOR_NOTES: list[str] = []


def generate(path: Path, *, apps: int, commits: int, seed: int = 1, clusters: int = CLUSTERS_PER_ENV) -> Any:
    """sandbox.repogen.generate_repo; falls back to its fast-import backend if the default one fails."""
    import inspect
    import subprocess

    from sandbox.repogen import generate_repo

    options = {"apps": apps, "clusters": clusters, "commits": commits, "seed": seed, "force": True}
    try:
        return generate_repo(path, **options)
    except (subprocess.CalledProcessError, OSError) as exc:
        if "backend" not in inspect.signature(generate_repo).parameters:
            raise
        note = f"repogen's default backend failed ({type(exc).__name__}); used backend='fast-import'"
        if note not in GENERATOR_NOTES:
            GENERATOR_NOTES.append(note)
        return generate_repo(path, backend="fast-import", **options)


NAGLE_NOTE = (
    "Both emulators answer on keep-alive connections with two writes (headers, then body); with Nagle's "
    "algorithm on, every request then waits for the client's delayed ACK (~40 ms: 44 ms vs 0.9 ms per GET "
    "measured here). A real Argo CD or GitHub does not, so the bench sets `disable_nagle_algorithm = True` "
    "on both emulators' request handlers (socketserver's TCP_NODELAY switch) at start. Proposed fix in "
    "sandbox/argocd/server.py and sandbox/forge/server.py: the same class attribute on their handlers."
)


def without_nagle(server: Any) -> None:
    """Send each answer immediately (see NAGLE_NOTE): the emulator, not the portal, would be measured."""
    handler = getattr(server, "RequestHandlerClass", None)
    if handler is not None and not getattr(handler, "disable_nagle_algorithm", False):
        handler.disable_nagle_algorithm = True
        if NAGLE_NOTE not in GENERATOR_NOTES:
            GENERATOR_NOTES.append(NAGLE_NOTE)


def build_fleet(
    workdir: Path,
    *,
    name: str,
    argo_apps: int,
    commits: int,
    seed: int = 1,
    reconcile_interval: float = 3600.0,
    clusters: int = CLUSTERS_PER_ENV,
) -> Fleet:
    """Generate the repo, start the forge and the emulator over it, apply config/sandbox.yaml."""
    from sandbox.argocd.emulator import ArgoCDEmulator
    from sandbox.forge import ForgeEmulator

    repos = workdir / name / "forge"
    start = time.perf_counter()
    apps = max(1, round(argo_apps / (ENVS * clusters)))
    repo = generate(repos / "acme" / "gitops.git", apps=apps, commits=commits, seed=seed, clusters=clusters)
    generated = time.perf_counter() - start
    forge = ForgeEmulator(repos_dir=repos, token=FORGE_TOKEN)
    forge.start()
    without_nagle(forge._server)
    start = time.perf_counter()
    argocd = ArgoCDEmulator(
        repo_path=repo.path,
        repo_url=f"{forge.base_url}/acme/gitops.git",
        token=ARGOCD_TOKEN,
        reconcile_interval=reconcile_interval,  # the bench drives convergence itself
        sync_windows={},
    )
    argocd.start()
    without_nagle(argocd._server)
    fleet = Fleet(
        repo, forge, argocd, generate_seconds=generated, emulator_seconds=time.perf_counter() - start
    )
    fleet.settle()
    return fleet


def configure_portal(fleet: Fleet, *, prod_requires_approval: bool = True) -> Fleet:
    """Apply config/sandbox.yaml against this fleet's emulators (instance, repository, environments)."""
    from inventory.config import load_config
    from inventory.configapply import config_apply
    from inventory.models import ArgoInstance, Environment, GitRepository

    os.environ["SANDBOX_ARGOCD_PORT"] = fleet.argocd.base_url.rsplit(":", 1)[1]
    os.environ["SANDBOX_FORGE_PORT"] = fleet.forge.base_url.rsplit(":", 1)[1]
    os.environ["SANDBOX_ARGOCD_TOKEN"] = ARGOCD_TOKEN
    os.environ["SANDBOX_FORGE_TOKEN"] = FORGE_TOKEN
    config = load_config(str(ROOT / "config" / "sandbox.yaml"))
    assert config is not None
    config_apply(config=config)
    if not prod_requires_approval:
        Environment.objects.filter(name="prod").update(requires_approval=False)
    fleet.instance_id = ArgoInstance.objects.get(name="sandbox").pk
    fleet.repository_id = GitRepository.objects.get(name="gitops").pk
    return fleet


def reset_inventory() -> None:
    """Forget every observed row (between fleets of different sizes): a first poll starts from zero."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE inventory_deployment, inventory_argoapplication, inventory_committouch, inventory_commit,"
            " inventory_cluster, inventory_application, inventory_argoinstance, inventory_gitrepository"
            " RESTART IDENTITY CASCADE"
        )
