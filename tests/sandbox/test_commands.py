"""The sandbox's management commands: generator options and the Argo CD emulator's window flag."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sandbox.argocd.emulator import DEFAULT_SYNC_WINDOWS
from sandbox.management.commands.sandbox_argocd import _sync_windows
from sandbox.repogen import read_current_versions


def test_sandbox_repo_helm_and_rollout_options(tmp_path: Path) -> None:
    out = StringIO()
    path = tmp_path / "demo.git"
    call_command(
        "sandbox_repo", str(path), "--apps", "4", "--clusters", "1", "--commits", "20",
        "--helm-apps", "1", "--rollout-apps", "1", stdout=out,
    )  # fmt: skip
    assert "apps      5 across teams" in out.getvalue()
    versions = read_current_versions(path)
    helm = [app for app in versions if app.endswith(("-web", "-worker", "-cron", "-gateway"))]
    assert len(helm) == 1 and set(versions[helm[0]]) == {"dev", "stage", "prod"}


def test_sync_window_flag_adds_prod_deny_windows() -> None:
    windows = _sync_windows(["payments:*/15 * * * *:3m", "search:0 9 * * 1-5:1h"])
    added = windows["payments"][-1]
    assert (added["kind"], added["schedule"], added["duration"], added["clusters"]) == (
        "deny",
        "*/15 * * * *",
        "3m",
        ["prod-*"],
    )
    assert windows["payments"][: len(DEFAULT_SYNC_WINDOWS["payments"])] == DEFAULT_SYNC_WINDOWS["payments"]
    assert windows["search"][0]["schedule"] == "0 9 * * 1-5"
    with pytest.raises(CommandError):
        _sync_windows(["payments:never:3m"])
