"""Fixtures of the rollback tests (helpers live in tests/rollbacks/sandbox_env.py)."""

from __future__ import annotations

import pytest

from tests.rollbacks.sandbox_env import make_sandbox


@pytest.fixture
def sandbox_dirs(tmp_path, settings):
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    settings.PORTAL_BASE_URL = "http://portal.test"
    return tmp_path


@pytest.fixture
def sandbox(db, sandbox_dirs):
    box = make_sandbox(sandbox_dirs)
    yield box
    box.argocd.stop()
    box.forge.stop()


@pytest.fixture
def sandbox_auto_merge(db, sandbox_dirs):
    box = make_sandbox(sandbox_dirs, auto_merge=True)
    yield box
    box.argocd.stop()
    box.forge.stop()


@pytest.fixture
def live_sandbox(transactional_db, sandbox_dirs):
    """The sandbox with committed data, for tests that run a real Celery worker."""
    box = make_sandbox(sandbox_dirs)
    yield box
    box.argocd.stop()
    box.forge.stop()
