"""Argo CD failing mid-run: the data goes stale, nothing is deleted, polling recovers by itself.

Each test polls the emulated Argo CD once successfully, then breaks it (unreachable, slow, 500,
401, an HTML error page from a proxy), polls again through the real poller and finally lets the
emulator recover. What the portal knew must survive untouched and be flagged stale meanwhile.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
import requests

from integrations.argocd import ArgoCDClient
from inventory.models import ArgoApplication, ArgoInstance, Deployment
from inventory.poll import instance_poll
from tests.sandbox_fixtures import ARGOCD_TOKEN, commit_files, read_file, set_image_tag

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Snapshot:
    apps: list[tuple[str, str, str, str]]
    deployments: list[tuple[int, int, str]]
    deleted: int

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            apps=list(
                ArgoApplication.objects.order_by("name").values_list(
                    "name", "revision", "sync_status", "health_status"
                )
            ),
            deployments=list(
                Deployment.objects.order_by("pk").values_list("argo_app_id", "history_id", "revision")
            ),
            deleted=ArgoApplication.objects.filter(deleted_at__isnull=False).count(),
        )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connection refused


def _client(url: str, token: str, *, read_timeout: float = 5) -> ArgoCDClient:
    return ArgoCDClient(url, token, allow_http=True, timeout=(1, read_timeout))


def _stale_events() -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.filter(action="argocd.instance_stale").count()


FAULTS = {
    "unreachable": ({}, "refused"),
    "slow": ({"latency_ms": 1500}, "slow"),
    "http-500": ({"error_rate": 1.0, "status": 500}, None),
    "proxy-502-html": ({"error_rate": 1.0, "status": 502, "html": True}, None),
    "expired-token-401": ({"expire_tokens": True}, None),
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_failing_argocd_leaves_the_data_stale_and_polling_recovers(sandbox_inventory, kind):
    box = sandbox_inventory
    instance = box.instance
    token = ARGOCD_TOKEN
    before = Snapshot.take()
    assert before.apps and before.deployments, "the first poll stored nothing"
    stale_events = _stale_events()

    faults, transport = FAULTS[kind]
    if faults:
        box.argocd.faults.update(faults)
    url = f"http://127.0.0.1:{_closed_port()}" if transport == "refused" else box.argocd.base_url
    failing = _client(url, token, read_timeout=0.5 if transport == "slow" else 5)
    for _ in range(2):  # a second failing poll must not repeat the stale audit event
        result = instance_poll(instance_id=instance.pk, client=failing)
        assert result.error, f"{kind}: the poll did not report the failure"

    instance.refresh_from_db()
    assert instance.is_stale and instance.stale_since is not None and instance.last_error
    assert Snapshot.take() == before, f"{kind}: a failed poll changed or deleted stored data"
    assert _stale_events() == stale_events + 1

    # The emulator recovers: the next ordinary poll clears the flag without anyone's help.
    requests.post(f"{box.argocd.base_url}/sandbox/reset-faults", timeout=10).raise_for_status()
    result = instance_poll(instance_id=instance.pk, client=_client(box.argocd.base_url, token))
    assert not result.error, result.error
    instance.refresh_from_db()
    assert not instance.is_stale and instance.last_success_at is not None
    assert ArgoApplication.objects.filter(deleted_at__isnull=False).count() == 0
    assert len(Snapshot.take().apps) == len(before.apps)


def test_argocd_failing_mid_poll_after_the_list_keeps_everything(sandbox_inventory, argo_proxy):
    """The list answers, then every per-app read fails (e.g. Argo CD restarting mid-run)."""
    box = sandbox_inventory
    # Something changed since the first poll: a health change (stored from the list alone) and a
    # sync (a new history entry), so the poller must read the synced apps in full.
    box.argocd.faults.update({"degraded_tags": [_any_prod_tag(box)]})
    app = box.repo.apps[0].name
    path = f"environments/dev/{app}/kustomization.yaml"
    commit_files(box.repo.path, {path: set_image_tag(read_file(box.repo.path, path), "6.6.6")}, "bump\n")
    box.refresh()
    before = Snapshot.take()

    def fail_app_reads(status, headers, body):
        return (
            503,
            {"Content-Type": "text/plain"},
            b"upstream connect error or disconnect/reset before headers",
        )

    argo_proxy.mangle(r"^/api/v1/applications/[^?]+", fail_app_reads)
    client = _client(argo_proxy.base_url, ARGOCD_TOKEN)
    result = instance_poll(instance_id=box.instance.pk, client=client)
    assert result.error
    assert Snapshot.take() == before
    assert ArgoInstance.objects.get(pk=box.instance.pk).is_stale

    argo_proxy.reset()
    result = instance_poll(instance_id=box.instance.pk, client=client)
    assert not result.error, result.error
    assert ArgoApplication.objects.filter(health_status="Degraded").exists()
    assert Deployment.objects.filter(argo_app__claimed_app=app, version="6.6.6").exists()
    assert not ArgoInstance.objects.get(pk=box.instance.pk).is_stale


def _any_prod_tag(box) -> str:
    for app in ArgoApplication.objects.filter(environment__name="prod").exclude(images=[]):
        if "@" not in app.images[0]:
            return app.images[0].rsplit(":", 1)[-1]
    pytest.skip("no prod app pinned by tag")
