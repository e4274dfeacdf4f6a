"""Pages and the read API: filters, htmx partials, project scoping, point in time, query counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from inventory import models as inv
from tests.factories import ApplicationFactory, ArgoInstanceFactory, EnvironmentFactory, user_with_role

pytestmark = pytest.mark.django_db


def _seed(apps: int) -> None:
    """Write N apps x 3 environments of observed state, with history and commits."""
    now = timezone.now()
    instance = ArgoInstanceFactory(last_success_at=now, last_poll_finished_at=now)
    envs = [EnvironmentFactory(name=n, order=i) for i, n in enumerate(("dev", "stage", "prod"))]
    clusters = {
        e.pk: inv.Cluster.objects.get_or_create(
            instance=instance,
            server=f"https://{e.name}-eu",
            defaults={"name": f"{e.name}-eu", "environment": e, "labels": {"env": e.name, "region": "eu"}},
        )[0]
        for e in envs
    }
    repo = inv.GitRepository.objects.get_or_create(
        name="gitops",
        defaults={
            "url": "https://git.example/acme/gitops.git",
            "full_name": "acme/gitops",
            "web_url": "https://git.example/acme/gitops",
        },
    )[0]
    seq = inv.Commit.objects.count()
    for i in range(apps):
        app = ApplicationFactory(
            name=f"svc-{apps}-{i:03d}", project="payments" if i % 2 else "search", repository=repo
        )
        # Newest change in dev, oldest in prod: each environment is one commit behind the previous.
        for j, env in reversed(list(enumerate(envs))):
            seq += 1
            sha = f"{seq:040x}"
            commit = inv.Commit.objects.create(
                repository=repo,
                sha=sha,
                seq=seq,
                author_name="a",
                author_email="a@x",
                authored_at=now,
                committer_name="a",
                committed_at=now,
                message=f"change {app.name} {env.name}",
            )
            inv.CommitTouch.objects.create(commit=commit, application=app, environment=env, seq=seq)
            argo = inv.ArgoApplication.objects.create(
                instance=instance,
                name=f"{app.name}-{env.name}-eu",
                application=app,
                environment=env,
                cluster=clusters[env.pk],
                project=app.project,
                sync_status="Synced",
                health_status="Healthy",
                deployed_revision=sha,
                revision=sha,
                version=f"1.{j}.0",
                deployed_at=now - timedelta(hours=j),
            )
            inv.Deployment.objects.create(
                argo_app=argo,
                history_id=1,
                application=app,
                environment=env,
                cluster=clusters[env.pk],
                revision=sha,
                deployed_at=now - timedelta(hours=j),
                version=f"1.{j}.0",
            )


def _matrix_queries(client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("inventory:matrix"))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_matrix_query_count_does_not_grow_with_apps(client, django_assert_max_num_queries):
    client.force_login(user_with_role("viewer"))
    _seed(10)
    small = _matrix_queries(client)
    _seed(40)  # 50 apps now
    with django_assert_max_num_queries(small):
        html = client.get(reverse("inventory:matrix")).content.decode()
    assert "svc-40-039" in html and "50 applications" in html
    assert small <= 25


def test_matrix_filters_and_htmx_partial(client):
    _seed(10)
    client.force_login(user_with_role("viewer"))
    response = client.get(
        reverse("inventory:matrix"), {"project": "payments", "q": "svc-10-00"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'id="matrix-grid"' in html and 'hx-trigger="every 15s"' in html
    assert "project=payments" in html  # the refresh keeps the filters
    assert "svc-10-001" in html and "svc-10-000" not in html
    only_prod = client.get(reverse("inventory:matrix"), {"environment": "prod"}).content.decode()
    assert "svc-10-000-prod-eu" in only_prod and "svc-10-000-dev-eu" not in only_prod
    by_label = client.get(reverse("inventory:matrix"), {"label": "env=stage"}).content.decode()
    assert "svc-10-000-stage-eu" in by_label and "svc-10-000-prod-eu" not in by_label
    # Versions differ across environments for every seeded app; make one identical.
    inv.ArgoApplication.objects.filter(application__name="svc-10-003").update(version="2.0.0")
    differing = client.get(reverse("inventory:matrix"), {"differing": "1"}).content.decode()
    assert "svc-10-002" in differing and "svc-10-003" not in differing


def test_matrix_rows_are_scoped_to_the_users_projects(client):
    _seed(6)
    user = user_with_role("release_manager", username="rm-payments")
    user.groups.clear()
    RoleGrant.objects.create(user=user, role="release_manager", project="pay*")
    client.force_login(user)
    html = client.get(reverse("inventory:matrix")).content.decode()
    assert "svc-6-001" in html and "svc-6-000" not in html
    assert client.get(reverse("inventory:app", args=["svc-6-000"])).status_code == 403
    api = client.get("/api/v1/deployments").json()["deployments"]
    assert api and {r["project"] for r in api} == {"payments"}
    assert client.get("/api/v1/applications/svc-6-000/history").status_code == 404


def test_matrix_cells_show_commits_behind_and_action_links(client):
    _seed(1)
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    assert "1 commit behind dev" in html and "1 commit behind stage" in html
    assert "https://git.example/acme/gitops/commit/" in html


def test_point_in_time_rebuilds_the_matrix_from_deployments(client):
    _seed(2)
    client.force_login(user_with_role("viewer"))
    argo = inv.ArgoApplication.objects.get(name="svc-2-000-prod-eu")
    old = inv.Deployment.objects.get(argo_app=argo)
    inv.Deployment.objects.filter(pk=old.pk).update(deployed_at=timezone.now() - timedelta(days=3))
    inv.Deployment.objects.create(
        argo_app=argo,
        history_id=2,
        application=argo.application,
        environment=argo.environment,
        cluster=argo.cluster,
        revision="f" * 40,
        deployed_at=timezone.now() - timedelta(days=1),
        version="1.9.9",
    )
    at = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    html = client.get(reverse("inventory:matrix"), {"at": at}).content.decode()
    assert "Showing what ran at" in html
    assert "1.2.0" in html and "1.9.9" not in html
    assert 'hx-trigger="every 15s"' not in html
    now_html = client.get(reverse("inventory:matrix")).content.decode()
    assert "1.9.9" not in now_html  # the current state is the ArgoApplication row


def test_app_page_and_instances_page(client):
    _seed(1)
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:app", args=["svc-1-000"])).content.decode()
    assert "Deployment timeline" in html and "change svc-1-000 dev" in html  # dev commit not yet in stage
    html = client.get(reverse("inventory:instances")).content.decode()
    assert "sandbox" in html and "sandbox-argocd-token" not in html


def test_pages_require_login(client):
    response = client.get(reverse("inventory:matrix"))
    assert response.status_code == 302 and "login" in response["Location"]
    assert client.get("/api/v1/deployments").status_code == 401


def test_api_deployments_and_history(client):
    _seed(2)
    client.force_login(user_with_role("viewer"))
    data = client.get("/api/v1/deployments", {"app": "svc-2-001", "environment": "prod"}).json()
    (row,) = data["deployments"]
    assert row["application"] == "svc-2-001" and row["environment"] == "prod" and row["cluster"] == "prod-eu"
    assert set(row) >= {
        "namespace",
        "revision",
        "target_revision",
        "images",
        "version",
        "sync_status",
        "health_status",
        "deployed_at",
        "stale",
    }
    assert row["stale"] is False
    history = client.get("/api/v1/applications/svc-2-001/history").json()
    assert [h["environment"] for h in history["history"]] == ["dev", "stage", "prod"]
    assert client.get("/api/v1/applications/nope/history").status_code == 404
    assert client.get("/api/v1/applications/svc-2-001/history", {"limit": "0"}).status_code == 400
    schema = client.get("/api/schema").json()
    assert "/deployments" in schema["paths"] and "/applications/{name}/history" in schema["paths"]


def test_other_projects_instances_and_repository_errors_are_hidden_from_scoped_viewers(client):
    _seed(2)  # svc-2-000 is search's, svc-2-001 payments'
    search_only = ArgoInstanceFactory(
        name="search-argocd",
        is_stale=True,
        last_error="401 from https://argocd.search.internal: token expired",
    )
    inv.ArgoApplication.objects.filter(application__name="svc-2-000").update(instance=search_only)
    search_repo = inv.GitRepository.objects.create(
        name="search-gitops",
        url="https://git.example/search/gitops.git",
        full_name="search/gitops",
        last_error="fetch failed: https://git.example/search/gitops.git not found",
    )
    inv.Application.objects.filter(name="svc-2-000").update(repository=search_repo)

    user = user_with_role("viewer", username="payments-viewer")
    user.groups.clear()
    RoleGrant.objects.create(user=user, role="viewer", project="payments")
    client.force_login(user)
    for url in (reverse("inventory:instances"), reverse("inventory:matrix")):
        html = client.get(url).content.decode()
        assert "search-argocd" not in html and "argocd.search.internal" not in html, url
        assert "search-gitops" not in html and "search/gitops" not in html, url
    assert "sandbox" in client.get(reverse("inventory:instances")).content.decode()

    client.force_login(user_with_role("viewer", username="everyone-viewer"))
    html = client.get(reverse("inventory:instances")).content.decode()
    assert "search-argocd" in html and "search-gitops" in html
    assert "argocd.search.internal" in client.get(reverse("inventory:matrix")).content.decode()
