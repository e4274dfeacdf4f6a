"""PostgreSQL going away under a polling worker: it reconnects and records each deployment once.

Restarting the shared PostgreSQL server is not an option here, so the test does what a restart
does to the worker: its backend connection is terminated (pg_terminate_backend) while a poll is in
flight, held at the Argo CD list call by a proxy so that the poll has claimed the instance and
will write afterwards.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from inventory.models import ArgoInstance, Deployment
from inventory.tasks import poll_instance_task
from tests.faults.promo import workers_fixture
from tests.sandbox_fixtures import commit_files, read_file, set_image_tag

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(request, sandbox_inventory, workspaces_dir, purge_broker, tmp_path, settings):
    yield from workers_fixture(request, tmp_path, settings)


def _terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _bump_prod_tag(box, tag: str) -> str:
    """Commit a new prod image tag for one app straight to main (as a merged PR would)."""
    app = next(a for a in box.repo.apps if not a.uses_digest)
    path = f"environments/prod/{app.name}/kustomization.yaml"
    commit_files(
        box.repo.path, {path: set_image_tag(read_file(box.repo.path, path), tag)}, f"{app.name}: {tag}"
    )
    box.refresh()
    return app.name


def test_the_poller_survives_its_database_connection_dying_mid_poll(sandbox_inventory, argo_proxy, workers):
    box = sandbox_inventory
    ArgoInstance.objects.filter(pk=box.instance.pk).update(url=argo_proxy.base_url)
    workers.start()

    for round_ in range(3):
        hold = argo_proxy.hold("GET", r"^/api/v1/applications(\?|$)")
        poll_instance_task.delay(box.instance.pk)
        hold.wait_arrival(30)
        killed = _terminate_other_backends()
        assert killed >= 1, "the worker held no database connection"
        hold.release()
        app = _bump_prod_tag(box, f"9.9.{round_}")
        killed_at = timezone.now()

        # Beat would enqueue a poll every POLL_INTERVAL_SECONDS; do the same for a bounded time.
        def recovered() -> bool:
            instance = ArgoInstance.objects.get(pk=box.instance.pk)
            if instance.last_success_at and instance.last_success_at > killed_at:
                return Deployment.objects.filter(
                    argo_app__application__name=app, version__contains=f"9.9.{round_}"
                ).exists()
            poll_instance_task.delay(box.instance.pk)
            time.sleep(1)
            return False

        deadline = time.monotonic() + 30
        while not recovered():
            if time.monotonic() > deadline:
                instance = ArgoInstance.objects.get(pk=box.instance.pk)
                pytest.fail(
                    f"round {round_}: no successful poll within 30 s of the connection dying; the instance "
                    f"still looks claimed (poll started {instance.last_poll_started_at}, finished "
                    f"{instance.last_poll_finished_at}, stale={instance.is_stale}): a poll that dies on a "
                    "database error must release its claim, or polling stops for POLL_TIMEOUT_SECONDS"
                )

    duplicates = [
        key
        for key, count in Counter(
            Deployment.objects.values_list("argo_app_id", "revision", "deployed_at")
        ).items()
        if count > 1
    ]
    assert not duplicates, f"deployments recorded twice: {duplicates[:5]}"
    assert len(set(Deployment.objects.values_list("argo_app_id", "history_id"))) == Deployment.objects.count()
    assert not ArgoInstance.objects.get(pk=box.instance.pk).is_stale
