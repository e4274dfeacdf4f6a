"""The app timeline: one row per change with its clusters inside, who asked and approved, the PR."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from audit.services import change_record_sync
from inventory import models as inv
from tests.factories import user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db

APP = "svc-1-000"


def _prod_section(client) -> str:
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:app", args=[APP])).content.decode()
    start = html.index('<h2 id="env-prod">')
    return html[start : html.find("<h2 id=", start + 10)]


def _second_cluster_runs_the_same_revision(
    *, initiated_by: str = "", automated: bool = False
) -> inv.Deployment:
    first = inv.Deployment.objects.get(application__name=APP, environment__name="prod")
    instance, env = first.argo_app.instance, first.environment
    cluster = inv.Cluster.objects.create(
        instance=instance, server="https://prod-us", name="prod-us", environment=env
    )
    argo = inv.ArgoApplication.objects.create(
        instance=instance, name=f"{APP}-prod-us", application=first.application, environment=env,
        cluster=cluster, project=first.application.project, deployed_revision=first.revision,
        revision=first.revision, version=first.version, deployed_at=first.deployed_at,
    )  # fmt: skip
    inv.Deployment.objects.filter(pk=first.pk).update(initiated_by=initiated_by, automated=automated)
    return inv.Deployment.objects.create(
        argo_app=argo, history_id=1, application=first.application, environment=env, cluster=cluster,
        revision=first.revision, deployed_at=first.deployed_at, version=first.version,
        initiated_by=initiated_by, automated=automated,
    )  # fmt: skip


def test_one_row_per_change_with_its_clusters_and_the_portal_change_behind_it(client):
    _seed(1)
    deployment = _second_cluster_runs_the_same_revision(initiated_by="automated", automated=True)
    change_record_sync(
        kind="promotion", source_type="promotion", source_id=f"7:{APP}", app=APP, environment="prod",
        requester_name="rita", approvers=["alex"], pr_number=12, pr_url="http://forge/pull/12",
        revision_after=deployment.revision, outcome="succeeded",
    )  # fmt: skip
    section = _prod_section(client)
    assert section.count("data-change-row") == 1
    assert "prod-eu at" in section and "prod-us at" in section
    assert "initiated by rita" in section and "approved by alex" in section
    assert 'href="/promotions/7/"' in section and "PR #12" in section
    assert "initiated by automated" not in section


def test_auto_sync_names_argo_cd_and_out_of_band_is_explained(client):
    _seed(1)
    _second_cluster_runs_the_same_revision(initiated_by="automated", automated=True)
    inv.Deployment.objects.filter(application__name=APP, environment__name="prod").update(out_of_band=True)
    section = _prod_section(client)
    assert "initiated by Argo CD (auto-sync)" in section
    assert re.search(r'title="Out of band: a change to a production-like environment[^"]*"', section)
    assert "without" in section or "did not come through a portal" in section


def _lane(html: str) -> str:
    return html[html.index("data-pipeline-lane") : html.index('<h2 id="env-dev">')]


def test_pipeline_lane_shows_each_stage_what_waits_and_one_promote_where_possible(client):
    _seed(1)
    inv.ArgoApplication.objects.filter(name=f"{APP}-prod-eu").update(health_status="Degraded")
    client.force_login(user_with_role("release_manager"))
    lane = _lane(client.get(reverse("inventory:app", args=[APP])).content.decode())
    for env, version in (("dev", "1.0.0"), ("stage", "1.1.0"), ("prod", "1.2.0")):
        assert f'data-stage="{env}"' in lane and f"<code>{version}</code>" in lane
    assert "1 commit</strong> waiting" in lane and "1.2.0 → 1.1.0" in lane
    assert "Degraded" in lane
    assert lane.count("data-promote") == 2  # dev → stage and stage → prod; nothing after prod
    # Once stage and prod run the same thing, there is nothing to promote: no button.
    stage = inv.ArgoApplication.objects.get(name=f"{APP}-stage-eu")
    inv.ArgoApplication.objects.filter(name=f"{APP}-prod-eu").update(
        version=stage.version, deployed_revision=stage.deployed_revision, revision=stage.revision
    )
    lane = _lane(client.get(reverse("inventory:app", args=[APP])).content.decode())
    assert lane.count("data-promote") == 1 and "Nothing to promote" in lane
    client.force_login(user_with_role("viewer", "vic"))
    assert "data-promote" not in _lane(client.get(reverse("inventory:app", args=[APP])).content.decode())


def test_matrix_shows_summary_counts_and_a_legend(client):
    _seed(2)
    inv.ArgoApplication.objects.filter(name="svc-2-000-prod-eu").update(health_status="Degraded")
    inv.ArgoApplication.objects.filter(name="svc-2-001-stage-eu").update(sync_status="OutOfSync")
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    summary = html[html.index("data-matrix-summary") : html.index("</ul>", html.index("data-matrix-summary"))]
    assert "<strong>6</strong> deployments shown" in summary
    assert "1 OutOfSync" in summary and "1 Degraded" in summary and "0 stale" in summary
    assert "data-matrix-legend" in html and "commits behind" in html
