"""Helm-values apps: multi-source Argo CD apps (a chart + a `ref: values` source) read by the poller.

The sandbox serves them as Argo CD documents multi-source apps with values in Git:
`spec.sources = [{path: apps/<app>/chart, helm: {valueFiles: ["$values/environments/<env>/<app>/values.yaml"]}},
{ref: values}]`, `status.sync.revisions` / `status.history[].revisions` one per source. Before the
poller read them, such an app was mapped to its chart's directory and promoted as a kustomize app:
its Deployment rows had no version before the last sync, its commits waiting were judged by a
kustomization it has none of, and a promotion was refused with
"environments/prod/<app>/kustomization.yaml does not exist".
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from ruamel.yaml import YAML

from audit.models import AuditEvent
from inventory.carried import carried_value
from inventory.models import Application, ArgoApplication, CommitTouch, Deployment, Environment
from tests.factories import user_with_role
from tests.sandbox_fixtures import read_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def sandbox_repo_options():
    return {"apps": 2, "clusters": 1, "commits": 80, "seed": 11, "helm_apps": 1}


def _helm_app(sandbox_inventory) -> Application:
    spec = next(a for a in sandbox_inventory.repo.apps if a.source == "helm")
    return Application.objects.get(name=spec.name)


def _tag_at(repo, revision: str, env: str, app: str) -> str:
    values = YAML(typ="safe").load(read_file(repo.path, f"environments/{env}/{app}/values.yaml", revision))
    return str(values["image"]["tag"])


def test_a_helm_values_app_is_mapped_to_its_values_directory_and_promoted_by_helm_values(sandbox_inventory):
    app = _helm_app(sandbox_inventory)
    assert app.strategy == "helm-values"
    assert app.strategy_options == {"file": "values.yaml", "paths": ["image.tag"]}
    event = AuditEvent.objects.get(action="inventory.strategy_discovered", target_id=str(app.pk))
    assert event.before == {"strategy": "kustomize-images", "strategy_options": {}}
    assert event.after["values_file"].endswith(f"/{app.name}/values.yaml")

    rows = list(ArgoApplication.objects.filter(application=app).select_related("environment"))
    assert {r.environment.name for r in rows} == {"dev", "stage", "prod"}
    for row in rows:
        assert row.is_multi_source
        # The directory a promotion edits, not the chart's (apps/<app>/chart stays in `sources`).
        assert row.path == f"environments/{row.environment.name}/{app.name}"
        assert row.sources[0]["path"] == f"apps/{app.name}/chart"
        assert row.sources[0]["value_files"] == [
            f"$values/environments/{row.environment.name}/{app.name}/values.yaml"
        ]
        assert row.sources[1]["ref"] == "values"
        # The values source's revision (position 2) is the app's Git revision.
        assert row.revision == row.revisions[1] and len(row.revision) == 40
        assert row.version == _tag_at(
            sandbox_inventory.repo, row.deployed_revision, row.environment.name, app.name
        )
    # Kustomize apps keep the single-source reading and their strategy.
    other = ArgoApplication.objects.exclude(application=app).first()
    assert not other.is_multi_source and other.application.strategy == "kustomize-images"


def test_helm_deployment_rows_carry_the_values_revision_and_the_image_tag_of_values_yaml(sandbox_inventory):
    app = _helm_app(sandbox_inventory)
    deployments = list(Deployment.objects.filter(application=app).select_related("environment"))
    assert len(deployments) > 3
    for d in deployments:
        assert len(d.revisions) == 2 and d.revision == d.revisions[1]
        # Every history entry, not only the last one: the tag its values.yaml pinned then.
        assert d.version == _tag_at(sandbox_inventory.repo, d.revision, d.environment.name, app.name), (
            d.revision
        )


def test_commits_waiting_are_judged_by_the_values_a_promotion_copies(sandbox_inventory):
    """The ingest ran before the poll named the strategy: the app's touches are judged again."""
    app = _helm_app(sandbox_inventory)
    stage = Environment.objects.get(name="stage")
    touches = list(
        CommitTouch.objects.filter(application=app, environment=stage)
        .select_related("commit")
        .order_by("seq")
    )
    assert touches
    repo = sandbox_inventory.repo.path

    def reader(rev):
        def read(path):
            try:
                return read_file(repo, path, rev)
            except RuntimeError:
                return None

        return read

    for touch in touches:
        parent = touch.commit.parents[0] if touch.commit.parents else None
        expected = parent is None or carried_value(app, stage, reader(touch.commit.sha)) != carried_value(
            app, stage, reader(parent)
        )
        assert touch.carried is expected, touch.commit.message
    # A values file changes more than the tag (log level, flags, replicas): not every touch carries.
    assert {t.carried for t in touches} == {True, False}


def test_the_matrix_shows_the_helm_app_with_its_versions(client, sandbox_inventory):
    app = _helm_app(sandbox_inventory)
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix"), {"q": app.name}).content.decode()
    assert app.name in html
    for row in ArgoApplication.objects.filter(application=app):
        assert row.version and row.version in html


def test_an_app_the_configuration_lists_keeps_its_strategy(sandbox_inventory):
    from inventory.poll import instance_poll

    app = _helm_app(sandbox_inventory)
    Application.objects.filter(pk=app.pk).update(
        strategy="copy-paths", strategy_options={"paths": ["values.yaml"]}
    )
    instance = sandbox_inventory.instance
    instance.mapping = {**instance.mapping, "configured_apps": [app.name]}
    instance.save(update_fields=["mapping"])
    ArgoApplication.objects.filter(application=app).update(state_hash="", list_hash="")  # read in full again
    assert instance_poll(instance_id=instance.pk).ok
    app.refresh_from_db()
    assert app.strategy == "copy-paths"
    assert AuditEvent.objects.filter(action="inventory.strategy_discovered").count() == 1


def test_values_files_resolve_through_refs_and_relative_to_the_chart_source():
    from integrations.argocd.models import AppSource
    from inventory.appstate import git_revision, values_source

    gitops = {"https://git.example.com/acme/gitops.git"}
    chart_repo = AppSource(
        "https://charts.example.com", None, "2.1.0", "search", None, ("$values/envs/prod/search/values.yaml",)
    )
    values_ref = AppSource("https://git.example.com/acme/gitops.git", None, "main", None, "values")
    found = values_source([chart_repo, values_ref], gitops)
    assert found is not None and (found.position, found.files, found.directory) == (
        2,
        ("envs/prod/search/values.yaml",),
        "envs/prod/search",
    )
    sha = "a" * 40
    assert git_revision(["2.1.0", sha], [chart_repo, values_ref], gitops) == sha
    # A `$ref` naming no source, or a values repository the portal does not manage: nothing.
    assert values_source([chart_repo], gitops) is None
    assert values_source([chart_repo, values_ref], {"https://other.example.com/x.git"}) is None
    # A plain value file is relative to the chart's own path (a chart directory in the GitOps repo).
    in_repo = AppSource(
        "https://git.example.com/acme/gitops.git",
        "charts/web",
        "main",
        None,
        None,
        ("../../envs/dev/web/values.yaml",),
    )
    assert values_source([in_repo], gitops).files == ("envs/dev/web/values.yaml",)
    # Stored JSON (ArgoApplication.sources) reads the same.
    stored = [{"repo_url": "https://charts.example.com", "chart": "search", "value_files": ["$values/envs/prod/search/values.yaml"]},
              {"repo_url": "https://git.example.com/acme/gitops.git", "ref": "values"}]  # fmt: skip
    assert values_source(stored, gitops).directory == "envs/prod/search"
