"""Fixtures for promotion tests (helpers in tests/promotions/helpers.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from accounts.roles import ALL_ROLES
from tests.conftest import WorkerProcess
from tests.factories import UserFactory
from tests.promotions.helpers import make_sandbox


def _groups() -> None:
    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)


@pytest.fixture
def roles(db):
    _groups()


@pytest.fixture
def users(roles):
    return {
        "rm": UserFactory(username="rita", email="rita@example.com", roles=["release_manager"]),
        "approver": UserFactory(username="alex", email="alex@example.com", roles=["approver"]),
        "approver2": UserFactory(username="bea", email="bea@example.com", roles=["approver"]),
        "viewer": UserFactory(username="vic", roles=["viewer"]),
        "rm_approver": UserFactory(
            username="sam", email="sam@example.com", roles=["release_manager", "approver"]
        ),
    }


@pytest.fixture
def sandbox(db, tmp_path, settings):
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    box = make_sandbox(tmp_path)
    yield box
    box.argo.stop()
    box.forge.stop()


@pytest.fixture
def manual_prod(db, tmp_path, settings):
    """The sandbox with prod apps without auto-sync, and prod configured `sync: portal`."""
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    box = make_sandbox(tmp_path, argo_options={"auto_sync_envs": ("dev", "stage")})
    box.prod.sync_mode = "portal"
    box.prod.sync_options = {"prune": True, "apply_out_of_sync_only": True}
    box.prod.save()
    yield box
    box.argo.stop()
    box.forge.stop()


@pytest.fixture
def worker_factory(purge_broker, tmp_path, settings):
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path / f"worker-{len(workers)}.log",
            extra_env={
                "GITOPSPORTAL_MIRRORS_DIR": str(settings.MIRRORS_DIR),
                "GITOPSPORTAL_WORKSPACES_DIR": str(settings.WORKSPACES_DIR),
                "CELERY_RETRY_BACKOFF_MAX": "4",
            },
        ).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
        # Shown by pytest when the test failed.
        print(f"---- {worker.log_path.name}\n" + worker.log_path.read_text(errors="replace")[-6000:])
