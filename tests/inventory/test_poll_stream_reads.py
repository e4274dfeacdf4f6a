"""A first poll reads its apps in full from one watch stream's initial burst, not a GET per app."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from django.db import models, transaction
from django.utils import timezone

from audit.models import AuditEvent, ChangeRecord
from inventory.configapply import config_apply
from inventory.ingest import repository_ingest
from inventory.models import ArgoApplication, ArgoInstance, Deployment, GitRepository
from inventory.poll import instance_poll
from tests.inventory.test_poll_at_scale import RecordingClient
from tests.sandbox_fixtures import commit_files, read_file, set_image_tag

pytestmark = pytest.mark.django_db

STREAM = "/api/v1/stream/applications"


@pytest.fixture
def argocd_options() -> dict[str, Any]:
    # Argo CD's 15 s keep-alive period, shortened: a burst whose last app is missing ends after one.
    return {"keepalive_interval": 0.3}


@pytest.fixture
def ingested(db, sandbox_repo, forge, argocd, sandbox_config, mirrors_dir, settings):
    """The sandbox instance configured and its repository ingested, never polled."""
    config_apply(config=sandbox_config)
    assert repository_ingest(repository_id=GitRepository.objects.get(name="gitops").pk).ok
    argocd.reconcile()
    settings.ARGOCD_STREAM_FULL_READS_OVER = 0  # the sandbox fleet is a dozen apps
    return ArgoInstance.objects.get(name="sandbox"), argocd


class DroppingClient(RecordingClient):
    """Loses the stream events of some apps, as if they were deleted between list and stream."""

    def __init__(self, base_url: str, drop: set[str]) -> None:
        super().__init__(base_url)
        self.drop = drop

    def _initial_events(self, fields, timeout):
        for data in super()._initial_events(fields, timeout):
            name = data and data.get("result", {}).get("application", {}).get("metadata", {}).get("name")
            if name not in self.drop:
                yield data


def _poll(instance, client: RecordingClient) -> Any:
    result = instance_poll(instance_id=instance.pk, client=client)
    assert result.ok, result.error
    return result


def test_a_first_poll_is_one_list_and_one_stream_instead_of_a_get_per_app(ingested, settings):
    instance, argocd = ingested
    names = sorted(argocd.apps)
    assert len(names) > 5

    before = RecordingClient(argocd.base_url)
    settings.ARGOCD_STREAM_FULL_READS = False
    sid = transaction.savepoint()
    _poll(instance, before)
    transaction.savepoint_rollback(sid)
    assert before.full_reads == names  # today: N full GETs

    settings.ARGOCD_STREAM_FULL_READS = True
    client = RecordingClient(argocd.base_url)
    result = _poll(instance, client)

    assert client.full_reads == []
    assert client.paths.count("/api/v1/applications") == 1 and client.paths.count(STREAM) == 1
    assert result.apps_new == len(names) and result.new_deployments > 0
    assert Deployment.objects.count() == result.new_deployments


def test_the_stream_stores_the_same_rows_and_audit_as_the_gets(ingested, settings):
    instance, argocd = ingested
    started = timezone.now()

    def snapshot() -> dict[str, list[Any]]:
        return {
            model.__name__: sorted(map(repr, (_row(r, started) for r in model.objects.all())))
            for model in (ArgoApplication, Deployment, AuditEvent, ChangeRecord)
        }

    settings.ARGOCD_STREAM_FULL_READS = False
    sid = transaction.savepoint()
    get_client = RecordingClient(argocd.base_url)
    _poll(instance, get_client)
    by_gets = snapshot()
    transaction.savepoint_rollback(sid)

    settings.ARGOCD_STREAM_FULL_READS = True
    stream_client = RecordingClient(argocd.base_url)
    _poll(instance, stream_client)

    assert get_client.full_reads and not stream_client.full_reads
    assert by_gets["Deployment"] and by_gets["AuditEvent"]
    assert snapshot() == by_gets


def test_a_few_changed_apps_of_the_fleet_are_read_by_get_not_from_a_stream(ingested, sandbox_repo, forge):
    instance, argocd = ingested
    _poll(instance, RecordingClient(argocd.base_url))
    app = sandbox_repo.apps[0].name
    path = f"environments/dev/{app}/kustomization.yaml"
    commit_files(
        sandbox_repo.path, {path: set_image_tag(read_file(sandbox_repo.path, path), "9.9.9")}, "bump\n"
    )
    repository_ingest(repository_id=GitRepository.objects.get(name="gitops").pk)
    argocd.reconcile()
    argocd.reconcile()

    client = RecordingClient(argocd.base_url)
    _poll(instance, client)

    # The burst would carry the whole fleet for a quarter of it or less: one GET per synced app.
    assert 0 < len(client.full_reads) * 4 < len(argocd.apps)
    assert STREAM not in client.paths


def test_apps_the_stream_does_not_deliver_are_read_by_get(ingested):
    instance, argocd = ingested
    names = sorted(argocd.apps)
    lost = {names[1], names[-1]}  # one the sorted burst goes past, and the last

    client = DroppingClient(argocd.base_url, lost)
    result = _poll(instance, client)

    assert client.full_reads == sorted(lost)
    assert result.apps_new == len(names)
    assert set(ArgoApplication.objects.values_list("name", flat=True)) == set(names)
    assert Deployment.objects.filter(argo_app__name__in=lost).exists()


def test_with_the_stream_disabled_every_app_is_a_get(ingested, settings):
    instance, argocd = ingested
    settings.ARGOCD_STREAM_FULL_READS = False

    client = RecordingClient(argocd.base_url)
    _poll(instance, client)

    assert client.full_reads == sorted(argocd.apps) and STREAM not in client.paths


def _row(row: models.Model, started: datetime) -> dict[str, Any]:
    """A row by value: related rows by name; no ids (row ids in text too), hashes or times the polls set."""
    out: dict[str, Any] = {}
    for f in row._meta.concrete_fields:
        value = getattr(row, f.name)
        if f.primary_key or f.name in ("sequence", "hash", "prev_hash", "target_id", "source_id"):
            continue
        if isinstance(f, models.ForeignKey):
            value = getattr(value, "name", None) if value is not None else None
        if isinstance(value, datetime) and value >= started:
            value = "now"
        out[f.name] = value
    return out
