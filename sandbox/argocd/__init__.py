"""Emulated Argo CD API server (see docs/architecture.md, "Sandbox contracts").

Usage in tests::

    with ArgoCDEmulator(repo_path=repo.path, repo_url="https://forge.example/acme/gitops.git") as argo:
        requests.get(f"{argo.base_url}/api/v1/applications", headers={"Authorization": "Bearer " + argo.static_token})
"""

from sandbox.argocd.emulator import ApiError, ArgoCDEmulator, Faults

__all__ = ["ApiError", "ArgoCDEmulator", "Faults"]
