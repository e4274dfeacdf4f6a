"""The poller at fleet scale: unchanged items are not parsed, a monorepo commit is not N full reads."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.db import connection

from bench.measure import SqlCounter
from integrations.argocd import ArgoCDClient
from inventory.models import ArgoApplication, Deployment
from inventory.poll import instance_poll
from tests.sandbox_fixtures import ARGOCD_TOKEN, commit_files, read_file, set_image_tag

pytestmark = pytest.mark.django_db


class RecordingClient(ArgoCDClient):
    """The real client over a real session that remembers what it asked and what it parsed."""

    def __init__(self, base_url: str) -> None:
        self.paths: list[str] = []
        self.parsed: list[str] = []
        session = requests.Session()
        session.trust_env = False
        session.hooks["response"].append(self._seen)
        super().__init__(base_url, ARGOCD_TOKEN, allow_http=True, session=session)

    def _seen(self, resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self.paths.append(requests.utils.urlparse(resp.request.url).path)
        return resp

    def parse_list_item(self, item, index):
        self.parsed.append(item["metadata"]["name"])
        return super().parse_list_item(item, index)

    @property
    def full_reads(self) -> list[str]:
        prefix = "/api/v1/applications/"
        return sorted(p.removeprefix(prefix) for p in self.paths if p.startswith(prefix))


def _poll(inv) -> tuple[Any, RecordingClient, SqlCounter]:
    client = RecordingClient(inv.argocd.base_url)
    counter = SqlCounter()
    with connection.execute_wrapper(counter):
        result = instance_poll(instance_id=inv.instance.pk, client=client)
    assert result.ok, result.error
    return result, client, counter


def test_an_unchanged_list_is_neither_parsed_nor_written(sandbox_inventory):
    inv = sandbox_inventory
    inv.refresh()
    _poll(inv)  # absorb whatever the emulator moved since the fixture's poll

    result, client, sql = _poll(inv)

    assert result.apps_seen == ArgoApplication.objects.live().count() > 0
    assert result.apps_changed == 0 and result.new_deployments == 0
    assert client.parsed == [] and client.full_reads == []
    assert sql.written_except("inventory_argoinstance") == 0


def test_a_monorepo_commit_moves_every_sync_revision_without_reading_every_app(sandbox_inventory):
    inv = sandbox_inventory
    inv.refresh()
    _poll(inv)
    app = inv.repo.apps[0].name
    path = f"environments/dev/{app}/kustomization.yaml"
    deployed_before = dict(ArgoApplication.objects.live().values_list("name", "deployed_revision"))

    sha = commit_files(
        inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), "9.9.9")}, "bump\n"
    )
    inv.refresh()
    result, client, sql = _poll(inv)

    rows = {r.name: r for r in ArgoApplication.objects.live()}
    synced = sorted(n for n, r in rows.items() if r.claimed_app == app and r.environment.name == "dev")
    assert synced
    # Argo CD reports the new commit as every app's sync revision: all of them are stored ...
    assert {r.revision for r in rows.values()} == {sha}
    assert result.apps_changed == len(rows)
    # ... but only the apps that were synced (a new operation and history entry) are read in full.
    assert client.full_reads == synced
    # The others differ from their stored list item only in that revision: not even decoded.
    assert sorted(client.parsed) == synced
    for name in synced:
        assert Deployment.objects.filter(argo_app__name=name, revision=sha, version="9.9.9").exists()
        assert rows[name].deployed_revision == sha
    for name, row in rows.items():
        if name not in synced:
            assert row.deployed_revision == deployed_before[name]
    # The sync-revision-only changes are one UPDATE, not one per app.
    assert sql.rows_written["inventory_argoapplication"] >= len(rows) - len(synced)
    # (+2 since the poll reads which repositories its apps track, to fetch them during the list.)
    assert sql.statements < 62

    # The next poll sees nothing new.
    again, client, sql = _poll(inv)
    assert again.apps_changed == 0 and client.full_reads == []
    assert sql.written_except("inventory_argoinstance") == 0
