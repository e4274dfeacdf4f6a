"""Polling the emulated Argo CD and ingesting the demo repo: the matrix shows what Argo CD reports."""

from __future__ import annotations

import re

import pytest
import requests
from django.urls import reverse

from audit.models import AuditEvent, ChangeRecord
from integrations.argocd import ArgoCDClient
from inventory.appdetail import commits_between
from inventory.models import ArgoApplication, Commit, CommitTouch, Deployment, Environment
from tests.factories import user_with_role
from tests.sandbox_fixtures import ARGOCD_TOKEN, commit_files, read_file, set_image_tag

pytestmark = pytest.mark.django_db


def emulated_apps(argocd) -> dict[str, dict]:
    resp = requests.get(
        f"{argocd.base_url}/api/v1/applications",
        headers={"Authorization": f"Bearer {ARGOCD_TOKEN}"},
        timeout=10,
    )
    resp.raise_for_status()
    return {a["metadata"]["name"]: a for a in resp.json()["items"]}


def version_of(image: str) -> str:
    return image.split("@", 1)[1] if "@" in image else image.rsplit(":", 1)[1]


def test_every_emulated_application_is_stored_as_reported(sandbox_inventory):
    state = emulated_apps(sandbox_inventory.argocd)
    rows = {
        r.name: r
        for r in ArgoApplication.objects.live().select_related("application", "environment", "cluster")
    }
    assert set(rows) == set(state)
    for name, app in state.items():
        row = rows[name]
        labels = app["metadata"]["labels"]
        assert row.sync_status == app["status"]["sync"]["status"]
        assert row.health_status == app["status"]["health"]["status"]
        assert row.deployed_revision == app["status"]["history"][-1]["revision"]
        assert row.revision == app["status"]["sync"]["revision"]
        assert row.application.name == labels["app.kubernetes.io/name"]
        assert row.application.project == app["spec"]["project"]
        assert row.environment.name == labels["env"]
        assert row.cluster.name == labels["cluster"]
        assert row.images == app["status"]["summary"]["images"]
        assert row.version == version_of(app["status"]["summary"]["images"][0])
        # Every history entry became one Deployment row.
        ids = sorted(Deployment.objects.filter(argo_app=row).values_list("history_id", flat=True))
        assert ids == sorted(h["id"] for h in app["status"]["history"])


def test_the_matrix_page_shows_exactly_what_argo_cd_reports(sandbox_inventory, client):
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    for name, app in emulated_apps(sandbox_inventory.argocd).items():
        cell = _cell_html(html, name)
        revision = app["status"]["history"][-1]["revision"]
        assert f"/acme/gitops/commit/{revision}" in cell
        assert revision[:8] in cell
        assert version_of(app["status"]["summary"]["images"][0])[:19] in cell
        assert app["status"]["sync"]["status"] in cell
        assert app["status"]["health"]["status"] in cell
    assert "is stale" not in html


def _cell_html(html: str, argo_name: str) -> str:
    match = re.search(
        rf'data-argo-app="{re.escape(argo_name)}">(.*?)</div>\s*</div>\s*(?:<div class="cell-item|</td>)',
        html,
        re.S,
    )
    assert match, f"no cell for {argo_name}"
    start = match.start()
    return html[start : html.index("</td>", start)]


def test_a_commit_merged_into_prod_appears_after_one_poll(sandbox_inventory, client):
    inv = sandbox_inventory
    app = inv.repo.apps[0].name
    path = f"environments/prod/{app}/kustomization.yaml"
    merge = commit_files(
        inv.repo.path,
        {path: set_image_tag(read_file(inv.repo.path, path), "9.9.9")},
        f"Promote {app} 9.9.9 to prod\n\nPromotion-Id: 42\n",
        merge_branch=f"promote/{app}-9.9.9-prod",
    )
    _wait_synced(inv, f"{app}-prod-eu-west-1", merge)

    result = inv.poll()

    assert result.ok and result.new_deployments >= 1
    row = ArgoApplication.objects.get(name=f"{app}-prod-eu-west-1")
    assert (row.deployed_revision, row.version) == (merge, "9.9.9")
    deployment = Deployment.objects.get(argo_app=row, revision=merge)
    assert deployment.version == "9.9.9" and deployment.out_of_band is False
    event = AuditEvent.objects.get(action="deployment.observed", target_id=str(deployment.pk))
    assert (event.app, event.environment, event.cluster, event.out_of_band) == (
        app,
        "prod",
        "prod-eu-west-1",
        False,
    )
    assert merge in event.shas
    client.force_login(user_with_role("viewer"))
    cell = _cell_html(client.get(reverse("inventory:matrix")).content.decode(), f"{app}-prod-eu-west-1")
    assert merge[:8] in cell and "9.9.9" in cell


def test_a_direct_push_to_prod_deployed_by_argo_cd_is_out_of_band(sandbox_inventory):
    inv = sandbox_inventory
    app = inv.repo.apps[1].name
    path = f"environments/prod/{app}/kustomization.yaml"
    sha = commit_files(
        inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), "7.7.7")}, "hotfix\n"
    )
    _wait_synced(inv, f"{app}-prod-eu-west-1", sha)

    inv.poll()

    deployment = Deployment.objects.get(argo_app__name=f"{app}-prod-eu-west-1", revision=sha)
    assert deployment.out_of_band is True
    event = AuditEvent.objects.get(action="deployment.observed", target_id=str(deployment.pk))
    assert event.out_of_band is True and event.target_type == "deployment"
    # Its change record, keyed like the ledger event so the evidence page finds the event.
    previous = (
        Deployment.objects.filter(argo_app=deployment.argo_app, history_id__lt=deployment.history_id)
        .order_by("-history_id")
        .first()
    )
    record = ChangeRecord.objects.get(source_type="deployment", source_id=str(deployment.pk))
    assert (record.kind, record.app, record.environment, record.outcome) == (
        "out_of_band",
        app,
        "prod",
        "succeeded",
    )
    assert (record.revision_before, record.revision_after) == (previous.revision, sha)
    assert record.versions_before == {app: previous.version} and record.versions_after == {app: "7.7.7"}
    assert record.deployed_at == deployment.deployed_at and record.requester_name == ""
    assert record.clusters == ["prod-eu-west-1"] and record.project == deployment.application.project
    assert "no portal pull request" in record.title or "without Promotion-Id" in record.title
    # Argo CD's result of the sync that deployed it (operationState), as the poller stored it.
    result = record.sync_result
    assert result["phase"] == "Succeeded" and result["revision"] == sha
    assert result["resources"]["total"] >= 1 and result["started_at"] and result["finished_at"]
    row = ArgoApplication.objects.get(name=f"{app}-prod-eu-west-1")
    assert row.sync_result == result


def test_a_manual_sync_is_out_of_band_but_gets_a_change_record_only_in_production(sandbox_inventory):
    inv = sandbox_inventory
    client = ArgoCDClient(inv.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    app = inv.repo.apps[0].name
    before = {
        env: Deployment.objects.filter(argo_app__name=f"{app}-{env}-eu-west-1").count()
        for env in ("stage", "prod")
    }
    prod_before = Deployment.objects.filter(argo_app__name=f"{app}-prod-eu-west-1").order_by("-history_id")[0]
    for env in ("stage", "prod"):
        client.sync(f"{app}-{env}-eu-west-1")
    from tests.conftest import wait_for

    def synced() -> bool:
        inv.refresh()
        state = emulated_apps(inv.argocd)
        return all(
            len(state[f"{app}-{env}-eu-west-1"]["status"].get("history", [])) > 0
            and state[f"{app}-{env}-eu-west-1"]["status"].get("operationState", {}).get("phase")
            == "Succeeded"
            and state[f"{app}-{env}-eu-west-1"]["status"]["history"][-1]["initiatedBy"].get("username")
            == "admin"
            for env in ("stage", "prod")
        )

    wait_for(synced, timeout=15, message="manual syncs")
    inv.poll()

    for env in ("stage", "prod"):
        new = Deployment.objects.filter(argo_app__name=f"{app}-{env}-eu-west-1").order_by("-history_id")
        assert new.count() == before[env] + 1
        assert new[0].out_of_band is True and new[0].initiated_by == "admin"
    stage, prod = (
        Deployment.objects.filter(argo_app__name=f"{app}-{env}-eu-west-1").order_by("-history_id")[0]
        for env in ("stage", "prod")
    )
    assert not ChangeRecord.objects.filter(source_type="deployment", source_id=str(stage.pk)).exists()
    record = ChangeRecord.objects.get(source_type="deployment", source_id=str(prod.pk))
    assert record.kind == "out_of_band" and record.requester_name == "admin"
    assert (record.revision_before, record.revision_after) == (prod_before.revision, prod.revision)
    assert record.versions_before == {app: prod_before.version} and record.versions_after == {
        app: prod.version
    }
    assert "initiated by admin" in record.title


def _wait_synced(inv, argo_name: str, revision: str) -> None:
    from tests.conftest import wait_for

    def synced() -> bool:
        inv.refresh()
        app = emulated_apps(inv.argocd)[argo_name]
        return app["status"].get("history", [{}])[-1].get("revision") == revision

    wait_for(synced, timeout=15, message=f"{argo_name} synced to {revision[:8]}")


def test_a_merge_commit_maps_to_the_environment_it_changed(sandbox_inventory):
    inv = sandbox_inventory
    app = inv.repo.apps[2].name
    path = f"environments/prod/{app}/kustomization.yaml"
    merge = commit_files(
        inv.repo.path,
        {path: set_image_tag(read_file(inv.repo.path, path), "5.5.5")},
        f"Promote {app} 5.5.5 to prod\n",
        merge_branch=f"promote/{app}-5.5.5-prod",
    )
    inv.poll()

    commit = Commit.objects.get(sha=merge)
    assert commit.is_merge and len(commit.parents) == 2
    assert commit.portal_ref == f"promote/{app}-5.5.5-prod"
    touches = list(
        CommitTouch.objects.filter(commit=commit).values_list(
            "application__name", "environment__name", "paths"
        )
    )
    assert touches == [(app, "prod", [path])]
    # The side commit carries the same change; both sit in the prod overlay's history.
    side = Commit.objects.get(sha=commit.parents[1])
    assert CommitTouch.objects.filter(commit=side, application__name=app, environment__name="prod").exists()


def test_generated_history_merges_are_attributed_to_promote_branches(sandbox_inventory):
    merges = list(Commit.objects.filter(is_merge=True))
    assert merges, "the demo repo has --no-ff merges of promote/ branches"
    for merge in merges:
        assert merge.portal_ref.startswith("promote/")
        assert CommitTouch.objects.filter(commit=merge, environment__name="prod").exists()


def test_commits_between_stage_and_prod_is_one_query(sandbox_inventory, django_assert_num_queries):
    from inventory.models import Application

    envs = {e.name: e for e in Environment.objects.all()}
    for app in Application.objects.filter(argo_apps__isnull=False).distinct():
        with django_assert_num_queries(1):
            commits = list(commits_between(application=app, from_env=envs["stage"], to_env=envs["prod"]))
        stage = ArgoApplication.objects.get(application=app, environment=envs["stage"])
        prod = ArgoApplication.objects.get(application=app, environment=envs["prod"])
        if stage.version == prod.version:
            assert commits == [] or all(c.touches.filter(environment=envs["stage"]).exists() for c in commits)
        else:
            assert commits, f"{app.name}: stage runs {stage.version}, prod {prod.version}"
            assert commits[0].seq <= Commit.objects.get(sha=stage.deployed_revision).seq


def test_poll_twice_without_changes_writes_nothing(sandbox_inventory):
    before = dict(ArgoApplication.objects.values_list("name", "last_changed_at"))
    result = sandbox_inventory.poll()
    assert result.ok and result.apps_changed == 0 and result.new_deployments == 0
    assert dict(ArgoApplication.objects.values_list("name", "last_changed_at")) == before


def test_a_ci_commit_to_a_non_production_environment_is_in_band(sandbox_inventory):
    inv = sandbox_inventory
    app = inv.repo.apps[1].name
    path = f"environments/stage/{app}/kustomization.yaml"
    sha = commit_files(
        inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), "7.7.8")}, "ci: bump\n"
    )
    _wait_synced(inv, f"{app}-stage-eu-west-1", sha)

    inv.poll()

    deployment = Deployment.objects.get(argo_app__name=f"{app}-stage-eu-west-1", revision=sha)
    assert deployment.out_of_band is False


@pytest.mark.parametrize("fetch_git", [True, False])
def test_a_poll_fetches_git_while_argo_cd_lists(sandbox_inventory, monkeypatch, settings, fetch_git):
    """The commit a sync names is fetched while the list is answered, in the same cycle, once.

    No webhook has brought the commit in: either way the deployment is judged on the ingested
    commit (in band, a CI commit to stage), never on a placeholder. With POLL_FETCH_GIT the one
    fetch of the cycle runs during the list request; without it, after the list, from the store path.
    """
    import threading
    import time

    from integrations.gitrepo import GitMirror
    from inventory.poll import instance_poll

    settings.POLL_FETCH_GIT = fetch_git
    inv = sandbox_inventory
    app = inv.repo.apps[0].name
    path = f"environments/stage/{app}/kustomization.yaml"
    sha = commit_files(
        inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), "7.7.9")}, "ci: bump\n"
    )
    _wait_synced(inv, f"{app}-stage-eu-west-1", sha)
    events: list[tuple[str, float, str]] = []
    fetch, listing = GitMirror.fetch, ArgoCDClient.list_application_texts

    def recorded_fetch(self):
        events.append(("fetch", time.monotonic(), threading.current_thread().name))
        return fetch(self)

    def slow_listing(self, **kwargs):
        time.sleep(0.3)  # a large fleet's list takes a while to answer
        try:
            return listing(self, **kwargs)
        finally:
            events.append(("listed", time.monotonic(), threading.current_thread().name))

    monkeypatch.setattr(GitMirror, "fetch", recorded_fetch)
    monkeypatch.setattr(ArgoCDClient, "list_application_texts", slow_listing)

    result = instance_poll(instance_id=inv.instance.pk)

    assert result.ok, result.error
    assert [e[0] for e in events] == (["fetch", "listed"] if fetch_git else ["listed", "fetch"])
    assert Commit.objects.filter(repository=inv.repository, sha=sha).exists()
    deployment = Deployment.objects.get(argo_app__name=f"{app}-stage-eu-west-1", revision=sha)
    assert deployment.out_of_band is False and deployment.version == "7.7.9"
    if fetch_git:
        # The fetch ran in the poll's own thread, while another thread waited on the list.
        assert events[0][2] != events[1][2] and events[0][1] < events[1][1]
        assert "git_checked" in result.phases and result.phases["git_checked"] <= result.phases["listed"]


def test_the_stored_operation_text_matches_argo_cd_or_says_it_moved(sandbox_inventory):
    """The poller reads the stored operation times as text: equal to Argo CD's, whatever its format."""
    from inventory.store import _operation_of, existing_apps, operation_moved

    items = emulated_apps(sandbox_inventory.argocd)
    for names in (None, list(items)):
        rows = existing_apps(sandbox_inventory.instance, names=names, operation_text=True)
        stored = {name: _operation_of(row) for name, row in rows.items()}
        assert set(stored) == set(items)
        assert all(isinstance(op[2], str) for op in stored.values())
        assert not [name for name, item in items.items() if operation_moved(item, stored[name])]
    name, item = next(iter(items.items()))
    op = item["status"]["operationState"]
    finished = op["finishedAt"]
    assert finished.endswith("Z")
    # The same instant written otherwise is no move; a second later is one.
    op["finishedAt"] = finished[:-1] + "+00:00"
    assert not operation_moved(item, stored[name])
    op["finishedAt"] = finished[:-1] + ".000000Z"
    assert not operation_moved(item, stored[name])
    op["finishedAt"] = finished[:-3] + f"{(int(finished[-3:-1]) + 1) % 60:02d}Z"
    assert operation_moved(item, stored[name])
    op["finishedAt"], op["phase"] = finished, "Running"
    assert operation_moved(item, stored[name])
    del item["status"]["operationState"]
    assert operation_moved(item, stored[name])
    assert operation_moved(item, None)
