"""Two Argo CD instances polled at once: applications with the same name on both stay apart."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from integrations.argocd import ArgoCDClient
from inventory.models import ArgoApplication, ArgoInstance, Deployment
from inventory.poll import instance_poll
from sandbox.argocd.emulator import ArgoCDEmulator
from tests.conftest import wait_for
from tests.inventory.test_poll_sandbox import emulated_apps
from tests.sandbox_fixtures import ARGOCD_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def second_argocd(sandbox_repo, forge):
    """A second Argo CD over the same repository: every Application name exists on both."""
    emulator = ArgoCDEmulator(
        repo_path=sandbox_repo.path,
        repo_url=f"{forge.base_url}/acme/gitops.git",
        token=ARGOCD_TOKEN,
        reconcile_interval=0.2,
        sync_windows={},
    )
    emulator.start()
    yield emulator
    emulator.stop()


def _poll_in_thread(instance_id: int, results: dict) -> None:
    try:
        results[instance_id] = instance_poll(instance_id=instance_id)
    finally:
        connection.close()


def test_two_instances_polled_at_once_keep_apps_with_the_same_name_apart(sandbox_inventory, second_argocd):
    inv = sandbox_inventory
    first = inv.instance
    second = ArgoInstance.objects.create(
        name="sandbox-b",
        url=second_argocd.base_url,
        token=ARGOCD_TOKEN,
        allow_http=True,
        verify_tls=False,
        mapping=first.mapping,
        cluster_env_label=first.cluster_env_label,
    )
    # Only the second instance gets a manual sync of one prod app: its history grows, the first's not.
    app = inv.repo.apps[0].name
    name = f"{app}-prod-eu-west-1"
    before = len(emulated_apps(second_argocd)[name]["status"].get("history", []))
    ArgoCDClient(second_argocd.base_url, ARGOCD_TOKEN, allow_http=True).sync(name)

    def synced() -> bool:
        second_argocd.reconcile()
        state = emulated_apps(second_argocd)[name]["status"]
        return len(state.get("history", [])) > before and state["operationState"]["phase"] == "Succeeded"

    wait_for(synced, timeout=15, message="manual sync on the second instance")
    first_history = len(emulated_apps(inv.argocd)[name]["status"]["history"])

    results: dict = {}
    threads = [threading.Thread(target=_poll_in_thread, args=(pk, results)) for pk in (first.pk, second.pk)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(results[pk].ok for pk in (first.pk, second.pk)), results

    names_a = set(ArgoApplication.objects.live().filter(instance=first).values_list("name", flat=True))
    names_b = set(ArgoApplication.objects.live().filter(instance=second).values_list("name", flat=True))
    assert names_a == names_b == set(emulated_apps(second_argocd)) and name in names_a
    row_a = ArgoApplication.objects.get(instance=first, name=name)
    row_b = ArgoApplication.objects.get(instance=second, name=name)
    assert row_a.pk != row_b.pk
    assert (row_a.application_id, row_a.environment_id) == (row_b.application_id, row_b.environment_id)
    # Each row's history is its own instance's: the manual sync shows on the second only.
    assert Deployment.objects.filter(argo_app=row_a).count() == first_history
    assert Deployment.objects.filter(argo_app=row_b).count() == before + 1
    assert Deployment.objects.filter(argo_app=row_b, initiated_by="admin").exists()
    assert not Deployment.objects.filter(argo_app=row_a, initiated_by="admin").exists()
    # The first instance's rows were not touched by the second poll.
    assert ArgoApplication.objects.filter(name=name).count() == 2
