"""Failures mark an instance stale (nothing deleted, then recovery); history is stored exactly once."""

from __future__ import annotations

import socket
import threading

import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from integrations.argocd import ArgoCDClient
from inventory.configapply import config_apply
from inventory.deployments import deployments_record
from inventory.ingest import repository_ingest
from inventory.models import Application, ArgoApplication, ArgoInstance, Deployment, GitRepository
from inventory.poll import instance_poll
from tests.factories import user_with_role
from tests.sandbox_fixtures import ARGOCD_TOKEN


def _snapshot():
    return (
        sorted(
            ArgoApplication.objects.filter(deleted_at__isnull=True).values_list("name", "deployed_revision")
        ),
        Deployment.objects.count(),
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"expire_tokens": True}, "invalid session"),
        ({"error_rate": 1.0, "status": 503}, "503"),
    ],
    ids=["401", "503"],
)
def test_a_failing_instance_is_stale_keeps_its_data_and_recovers(sandbox_inventory, client, fault, expected):
    inv = sandbox_inventory
    before = _snapshot()
    inv.argocd.faults.update(fault)

    result = instance_poll(instance_id=inv.instance.pk)

    assert not result.ok and expected in result.error
    assert ARGOCD_TOKEN not in result.error
    instance = ArgoInstance.objects.get(pk=inv.instance.pk)
    assert instance.is_stale and instance.stale_since and expected in instance.last_error
    assert instance.last_success_at is not None
    assert _snapshot() == before  # nothing deleted, nothing changed
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    assert "Data from sandbox is stale since" in html and expected in html
    # The legend explains the badge once; every cell of the stale instance carries it.
    assert html.count('badge badge-idle">stale<') == len(before[0]) + 1
    api = client.get("/api/v1/deployments").json()["deployments"]
    assert api and all(row["stale"] for row in api)
    assert AuditEvent.objects.filter(action="argocd.instance_stale").count() == 1

    # A second failure does not write a second "stale" event; recovery clears the flag.
    instance_poll(instance_id=inv.instance.pk)
    assert AuditEvent.objects.filter(action="argocd.instance_stale").count() == 1
    inv.argocd.faults.update({"expire_tokens": False, "error_rate": 0.0})
    assert instance_poll(instance_id=inv.instance.pk).ok
    instance.refresh_from_db()
    assert not instance.is_stale and instance.stale_since is None and instance.last_error == ""
    assert AuditEvent.objects.filter(action="argocd.instance_recovered").count() == 1
    assert "is stale" not in client.get(reverse("inventory:matrix")).content.decode()


@pytest.mark.django_db
def test_an_unreachable_instance_is_stale_and_transient(sandbox_inventory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ArgoInstance.objects.filter(pk=sandbox_inventory.instance.pk).update(url=f"http://127.0.0.1:{port}")
    before = _snapshot()
    result = instance_poll(instance_id=sandbox_inventory.instance.pk)
    assert result.transient and not result.ok
    assert ArgoInstance.objects.get(pk=sandbox_inventory.instance.pk).is_stale
    assert _snapshot() == before


@pytest.mark.django_db
def test_an_app_gone_from_argo_cd_is_marked_deleted_not_removed(sandbox_inventory):
    inv = sandbox_inventory
    gone = ArgoApplication.objects.first()
    # The emulator no longer reports it: simulate by renaming our row to a name Argo CD never had.
    ArgoApplication.objects.filter(pk=gone.pk).update(name="retired-app", state_hash="")
    inv.poll()
    row = ArgoApplication.objects.get(pk=gone.pk)
    assert row.deleted_at is not None
    assert Deployment.objects.filter(argo_app=row).exists()


def _run_in_threads(target, count: int = 2) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = target()
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_polls_store_each_history_entry_once(
    sandbox_repo, forge, argocd, sandbox_config, mirrors_dir
):
    config_apply(config=sandbox_config)
    repository_ingest(repository_id=GitRepository.objects.get().pk)
    instance = ArgoInstance.objects.get()

    results = _run_in_threads(lambda: instance_poll(instance_id=instance.pk))

    assert all(r.ok for r in results)
    expected = sum(
        len(a.history)
        for a in ArgoCDClient(argocd.base_url, ARGOCD_TOKEN, allow_http=True)
        .list_applications(fields=None)
        .items
    )
    assert Deployment.objects.count() == expected
    assert sum(r.new_deployments for r in results) == expected
    assert AuditEvent.objects.filter(action="deployment.observed").count() == expected


@pytest.mark.django_db(transaction=True)
def test_the_same_history_recorded_concurrently_makes_one_row_each(
    sandbox_repo, forge, argocd, sandbox_config, mirrors_dir
):
    # Bypass the per-instance claim: two workers hold the same history at the same moment.
    config_apply(config=sandbox_config)
    instance = ArgoInstance.objects.get()
    client = ArgoCDClient(argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    name = client.list_applications().items[0].name
    remote = client.get_application(name)
    assert len(remote.history) >= 2
    row = ArgoApplication.objects.create(
        instance=instance,
        name=name,
        application=Application.objects.create(name="ledger-x", project="payments"),
    )

    results = _run_in_threads(
        lambda: deployments_record(argo_app=row, history=remote.history, remote=remote), count=3
    )

    assert sorted(len(r) for r in results) == [0, 0, len(remote.history)]
    assert Deployment.objects.filter(argo_app=row).count() == len(remote.history)
    assert AuditEvent.objects.filter(
        action="deployment.observed", target_label__startswith=f"{name}#"
    ).count() == len(remote.history)


def _drop_apps(argocd, keep: int) -> list[str]:
    """Make the emulated Argo CD list only its first `keep` apps (as a narrowed token would)."""
    with argocd.lock:
        names = sorted(argocd.apps)
        for name in names[keep:]:
            argocd.apps.pop(name)
        argocd.rv += 1
    return names[keep:]


def test_an_empty_list_marks_the_instance_stale_instead_of_removing_every_app(sandbox_inventory, settings):
    settings.ARGOCD_REMOVAL_GUARD_CYCLES = 3
    live = ArgoApplication.objects.live().count()
    assert live > 0
    _drop_apps(sandbox_inventory.argocd, keep=0)

    for cycle in (1, 2):
        result = sandbox_inventory.poll()
        assert not result.ok and "listed no applications" in result.error
        assert f"poll {cycle} of 3" in result.error
        assert ArgoApplication.objects.live().count() == live
        instance = ArgoInstance.objects.get(pk=sandbox_inventory.instance.pk)
        assert instance.is_stale and "nothing was removed" in instance.last_error
    assert AuditEvent.objects.filter(action="argocd.instance_stale").count() == 1
    assert not AuditEvent.objects.filter(action="argocd.applications_removed").exists()

    # The drop lasted: the third poll believes it.
    result = sandbox_inventory.poll()
    assert result.ok and result.apps_removed == live
    assert ArgoApplication.objects.live().count() == 0


def test_a_sharp_drop_is_held_but_a_small_one_removes_at_once(sandbox_inventory, settings):
    settings.ARGOCD_REMOVAL_GUARD_MIN = 2
    settings.ARGOCD_REMOVAL_GUARD_PERCENT = 20
    live = ArgoApplication.objects.live().count()
    gone = _drop_apps(sandbox_inventory.argocd, keep=live - 2)
    result = sandbox_inventory.poll()
    assert result.ok and result.apps_removed == 2
    assert set(ArgoApplication.objects.exclude(deleted_at=None).values_list("name", flat=True)) == set(gone)

    _drop_apps(sandbox_inventory.argocd, keep=live - 2 - 3)
    result = sandbox_inventory.poll()
    assert not result.ok and f"{live - 5} of {live - 2} applications" in result.error
    assert ArgoApplication.objects.live().count() == live - 2
