"""The demo repository's apps (kustomize Deployments, Rollouts, the Helm chart) pass the zero-downtime
checklist as Argo CD renders them in prod, so `make demo` promotions are not blocked by it."""

from __future__ import annotations

from pathlib import Path

from core.zerodowntime import default_modes, evaluate
from integrations.argocd import ArgoCDClient
from sandbox.argocd import ArgoCDEmulator
from sandbox.repogen import generate_repo
from tests.sandbox.test_argocd_emulator import REPO_URL


def test_every_prod_app_of_the_demo_passes_the_production_checklist(tmp_path: Path):
    repo = generate_repo(
        tmp_path / "gitops.git", apps=4, clusters=1, commits=30, seed=5, helm_apps=1, rollout_apps=1
    )
    emu = ArgoCDEmulator(repo.path, REPO_URL, reconcile_interval=60.0, sync_windows={})
    emu.start()
    try:
        client = ArgoCDClient(emu.base_url, "sandbox-argocd-token", allow_http=True, timeout=(5, 20))
        cluster = next(c for c in repo.clusters if c.env == "prod")
        active = [check for check, mode in default_modes(production_like=True).items() if mode != "off"]
        kinds = set()
        for app in repo.apps:
            rendered = client.manifests(f"{app.name}-{cluster.name}")
            kinds |= {o.get("kind") for o in rendered.objects}
            results = evaluate(rendered.objects, default_namespace=rendered.namespace, only=active)
            failing = {r.check.id: [f.message for f in r.findings] for r in results if not r.passed}
            assert results[0].workloads >= 1, app.name
            assert not failing, (app.name, failing)
        assert {"Deployment", "Rollout", "PodDisruptionBudget"} <= kinds
    finally:
        emu.stop()
