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


def test_sync_window_flag_now_for_every_project_closes_prod_from_start_up(tmp_path: Path) -> None:
    """`make demo`'s `--sync-window '*:now:10m'`: every project's prod is closed now, open in 10 min."""
    from datetime import UTC, datetime, timedelta

    from core.syncwindows import next_opening
    from sandbox.argocd.emulator import ArgoCDEmulator
    from sandbox.repogen import generate_repo

    windows = _sync_windows(["*:now:10m"])
    (window,) = windows["*"]
    now = datetime.now(UTC)
    opens = next_opening([window], now)
    assert now + timedelta(minutes=9) <= opens <= now + timedelta(minutes=10)
    repo = generate_repo(tmp_path / "gitops.git", apps=2, clusters=1, commits=5, seed=3)
    emulator = ArgoCDEmulator(repo.path, "http://forge.test/acme/gitops.git", sync_windows=windows)
    emulator.load()
    assert "*" not in emulator.projects()
    prod = next(a for a in emulator.apps.values() if a.definition.env == "prod")
    stage = next(a for a in emulator.apps.values() if a.definition.env == "stage")
    assert window in emulator.windows_for(prod.definition)
    assert window not in emulator.windows_for(stage.definition)  # it covers prod-* clusters only
