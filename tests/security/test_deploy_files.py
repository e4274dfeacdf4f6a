"""The portal's own deployment files meet the checklist it enforces on others."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"


def _compose_command() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "sandbox"]])
def test_docker_compose_file_is_valid(profile):
    command = _compose_command()
    if command is None:
        pytest.skip("no docker compose client")
    result = subprocess.run(
        [*command, *profile, "config", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_every_process_with_healthchecks():
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "watcher", "argocd", "forge"} <= set(services)
    for name in ("postgres", "redis", "web", "worker", "beat", "watcher", "argocd", "forge"):
        assert "test" in services[name].get("healthcheck", {}), name
    for name in ("argocd", "forge", "sandbox-repo"):
        assert services[name]["profiles"] == ["sandbox"]
    assert "gunicorn" in (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1") and "FROM python:3.11-slim" in text
    assert "\nUSER 10001" in text and "HEALTHCHECK" in text and "collectstatic" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and "var" in ignored


def _manifests() -> list[dict]:
    if shutil.which("kubectl"):
        result = subprocess.run(
            ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return [d for d in YAML(typ="safe").load_all(io.StringIO(result.stdout)) if d]
    docs = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name not in ("kustomization.yaml", "secret.example.yaml", "portal.yaml"):
            docs += [d for d in YAML(typ="safe").load_all(path.read_text()) if d]
    return docs


def test_kubernetes_base_meets_the_zero_downtime_checklist():
    docs = _manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "gitopsportal-web",
        "gitopsportal-worker",
        "gitopsportal-beat",
        "gitopsportal-watcher",
    }
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert pdbs == {"gitopsportal-web", "gitopsportal-worker"}
    assert any(d["kind"] == "Service" for d in docs)

    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
            assert container["lifecycle"]["preStop"], name
            assert container["livenessProbe"], name
            refs = {next(iter(ref)) for ref in container["envFrom"]}
            assert refs == {"configMapRef", "secretRef"}, name

    web = deployments["gitopsportal-web"]["spec"]
    web_container = web["template"]["spec"]["containers"][0]
    assert web_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["strategy"]["rollingUpdate"]["maxUnavailable"] == 0 and web["replicas"] >= 2
    worker = deployments["gitopsportal-worker"]["spec"]
    assert "/readyz" in " ".join(
        worker["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    )
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] > 300  # > CELERY_TASK_TIME_LIMIT
    beat = deployments["gitopsportal-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    watcher = deployments["gitopsportal-watcher"]["spec"]
    assert watcher["replicas"] == 1 and watcher["strategy"]["type"] == "Recreate"
    assert watcher["template"]["spec"]["containers"][0]["command"][:3] == [
        "python",
        "manage.py",
        "argocd_watch",
    ]
