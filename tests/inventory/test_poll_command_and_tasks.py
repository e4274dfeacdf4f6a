"""`manage.py poll --once` and the Celery tasks, against the emulators (a real worker on Redis)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from inventory.models import ArgoApplication, ArgoInstance, Commit, Deployment, GitRepository
from tests.conftest import WorkerProcess
from tests.sandbox_fixtures import SANDBOX_CONFIG


@pytest.mark.django_db
def test_poll_once_prints_a_summary(sandbox_env, mirrors_dir):
    out = io.StringIO()
    call_command("poll", "--once", config=str(SANDBOX_CONFIG), stdout=out)
    text = out.getvalue()
    apps = ArgoApplication.objects.count()
    assert apps > 0 and Commit.objects.exists()
    assert f"argocd sandbox: {apps} apps seen" in text
    assert f"{Deployment.objects.count()} new deployments" in text
    assert "repository gitops: 80 commits ingested" in text
    assert "0 errors" in text
    assert "sandbox-argocd-token" not in text


@pytest.mark.django_db
def test_poll_once_fails_when_an_instance_fails(sandbox_env, argocd, mirrors_dir):
    argocd.faults.update({"expire_tokens": True})
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 source"):
        call_command("poll", "--once", config=str(SANDBOX_CONFIG), stdout=out)
    assert "ERROR" in out.getvalue() and "invalid session" in out.getvalue()
    assert ArgoInstance.objects.get().is_stale


@pytest.mark.worker
def test_the_tasks_run_on_a_real_worker(
    transactional_db, purge_broker, tmp_path, sandbox_config, mirrors_dir
):
    from inventory.configapply import config_apply
    from inventory.tasks import ingest_all_task, poll_all_task, poll_instance_task, repository_ingest_task

    config_apply(config=sandbox_config)
    worker = WorkerProcess(
        tmp_path / "worker.log", extra_env={"GITOPSPORTAL_MIRRORS_DIR": str(mirrors_dir)}
    ).start()
    try:
        repo = GitRepository.objects.get()
        ingest = repository_ingest_task.delay(repo.pk).get(timeout=60)
        assert ingest["commits"] == 80 and not ingest["error"]
        poll = poll_instance_task.delay(ArgoInstance.objects.get().pk).get(timeout=60)
        assert poll["apps_seen"] > 0 and not poll["error"]
        assert Deployment.objects.exists()
        # The beat entries fan out per row; running them again changes nothing.
        assert ingest_all_task.delay().get(timeout=30) == 1
        assert poll_all_task.delay().get(timeout=30) == 1
    finally:
        worker.stop()
