"""Insight pages render for a viewer, escape external text, and stay within the CSP."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from tests.factories import ApplicationFactory, EnvironmentFactory, user_with_role
from tests.security.htmlcheck import csp_nonce, inline_code_problems

from .builders import ArgoApplicationFactory, ClusterFactory, CommitFactory, DeploymentFactory, sha

pytestmark = pytest.mark.django_db

HOSTILE = '"><svg onload=alert(1)>'


@pytest.fixture
def hostile_world():
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    app = ApplicationFactory(name=f"pay{HOSTILE}", project=f"team{HOSTILE}")
    cluster = ClusterFactory(name="prod-eu-west-1", environment=prod)
    argo = ArgoApplicationFactory(
        application=app, environment=prod, cluster=cluster, name="pay-evil-prod-eu-west-1",
        sync_status="OutOfSync", out_of_sync_since=timezone.now(),
    )  # fmt: skip
    CommitFactory(repository=app.repository, sha=sha("c1"), seq=1, committed_at=timezone.now())
    DeploymentFactory(argo_app=argo, revision=sha("c1"), deployed_at=timezone.now())
    return app


def test_anonymous_users_go_to_the_login_page(client):
    for name in ("insight:dora", "insight:drift", "insight:dora_csv", "insight:notifications"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("name", ["insight:dora", "insight:drift"])
def test_pages_render_for_a_viewer_escaped_and_csp_clean(client, hostile_world, name):
    client.force_login(user_with_role(Role.VIEWER))
    response = client.get(reverse(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert HOSTILE not in html and "&quot;&gt;&lt;svg onload=alert(1)&gt;" in html
    assert inline_code_problems(html, nonce=csp_nonce(response.get("Content-Security-Policy", ""))) == []
    assert 'href="/insight/"' in html and ">Insight</a>" in html  # the nav link


def test_csv_quotes_formula_like_cells(client):
    EnvironmentFactory(name="prod", order=2, production_like=True)
    app = ApplicationFactory(name="=HYPERLINK(1)", project="payments")
    argo = ArgoApplicationFactory(application=app, environment=EnvironmentFactory(name="prod"))
    DeploymentFactory(argo_app=argo, revision=sha("c1"), deployed_at=timezone.now())
    client.force_login(user_with_role(Role.VIEWER))
    body = client.get(reverse("insight:dora_csv")).content.decode()
    assert "'=HYPERLINK(1)" in body and "\n=HYPERLINK" not in body


def test_dora_page_query_count_does_not_grow_with_history(client):
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    client.force_login(user_with_role(Role.VIEWER))

    def add(n: int) -> None:
        for i in range(n):
            app = ApplicationFactory(project="payments")
            argo = ArgoApplicationFactory(
                application=app, environment=prod, cluster=ClusterFactory(name=f"prod-eu-west-{app.pk}")
            )
            commit = CommitFactory(repository=app.repository, committed_at=timezone.now())
            DeploymentFactory(argo_app=argo, revision=commit.sha, deployed_at=timezone.now())

    add(2)
    client.get(reverse("insight:dora"))  # warm caches (sessions, content types)
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("insight:dora"))
    add(8)
    with CaptureQueriesContext(connection) as large:
        client.get(reverse("insight:dora"))
    assert len(large.captured_queries) == len(small.captured_queries)
