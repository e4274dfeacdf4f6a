"""Who sees which action: promote for release managers, roll back and revert for on-call, per scope."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import RoleGrant
from inventory import models as inv
from tests.factories import UserFactory, user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db

PAYMENTS_APP = "svc-10-001"  # odd index: project payments
SEARCH_APP = "svc-10-000"  # even index: project search


def _scoped(username: str, *grants: tuple[str, str, str]):
    """A user with only scoped grants: (role, project, environment)."""
    user = UserFactory(username=username)
    for role, project, environment in grants:
        RoleGrant.objects.create(user=user, role=role, project=project, environment=environment)
    return user


def _cells(html: str) -> dict[str, str]:
    """Map each matrix cell's Argo CD app name to its HTML."""
    parts = re.split(r'(?=<div class="cell-item[^"]*" data-argo-app=")', html)
    out = {}
    for part in parts[1:]:
        name = re.match(r'<div class="cell-item[^"]*" data-argo-app="([^"]+)"', part).group(1)
        out[name] = part.split("</td>", 1)[0]
    return out


def _matrix(client, user) -> dict[str, str]:
    client.force_login(user)
    response = client.get(reverse("inventory:matrix"))
    assert response.status_code == 200
    return _cells(response.content.decode())


def test_viewers_and_auditors_see_no_actions(client):
    _seed(4)
    for role in ("viewer", "auditor", "approver"):
        cells = _matrix(client, user_with_role(role))
        assert cells, role
        assert not any("Promote to" in c or "Roll back" in c for c in cells.values()), role


def test_a_release_manager_sees_promote_but_not_roll_back(client):
    _seed(4)
    cells = _matrix(client, user_with_role("release_manager"))
    dev, stage, prod = (cells[f"svc-4-000-{e}-eu"] for e in ("dev", "stage", "prod"))
    assert "Promote to stage" in dev and "from=dev&amp;to=stage" in dev
    assert "Promote to prod" in stage
    assert "Promote to" not in prod  # nothing after prod
    assert not any("Roll back" in c for c in cells.values())


def test_promote_to_is_not_offered_when_the_next_environment_runs_the_same_version(client):
    _seed(4)
    inv.ArgoApplication.objects.filter(name="svc-4-000-prod-eu").update(version="1.1.0")  # stage's version
    cells = _matrix(client, user_with_role("release_manager"))
    assert "Promote to prod" not in cells["svc-4-000-stage-eu"]
    assert "Promote to prod" in cells["svc-4-001-stage-eu"]


def test_on_call_sees_roll_back_but_not_promote(client):
    _seed(4)
    cells = _matrix(client, user_with_role("oncall"))
    assert all("Roll back" in c for c in cells.values())
    assert "?app=svc-4-000&amp;env=prod" in cells["svc-4-000-prod-eu"]
    assert not any("Promote to" in c for c in cells.values())


def test_actions_follow_the_project_and_environment_of_each_grant(client):
    _seed(10)
    user = _scoped(
        "rm-payments-stage",
        ("viewer", "*", "*"),
        ("release_manager", "payments", "stage"),  # may promote payments apps into stage only
        ("oncall", "*", "prod"),  # on call for prod, every project
    )
    cells = _matrix(client, user)
    assert "Promote to stage" in cells[f"{PAYMENTS_APP}-dev-eu"]
    assert "Promote to" not in cells[f"{PAYMENTS_APP}-stage-eu"]  # prod is out of the grant
    assert "Promote to" not in cells[f"{SEARCH_APP}-dev-eu"]  # another project
    assert "Roll back" in cells[f"{PAYMENTS_APP}-prod-eu"] and "Roll back" in cells[f"{SEARCH_APP}-prod-eu"]
    assert "Roll back" not in cells[f"{PAYMENTS_APP}-stage-eu"]


def test_action_rights_cost_a_constant_number_of_queries(client, django_assert_max_num_queries):
    user = _scoped("rm-scoped", ("release_manager", "payments", "*"), ("oncall", "search", "prod"))
    client.force_login(user)
    _seed(10)
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("inventory:matrix"))
    _seed(40)
    with django_assert_max_num_queries(len(small.captured_queries)):
        html = client.get(reverse("inventory:matrix")).content.decode()
    # Both kinds of action are on the page, computed for every one of the 50 apps' cells.
    assert html.count("Promote to") >= 40 and "Roll back" in html


def _app_page(client, user, name: str) -> str:
    client.force_login(user)
    response = client.get(reverse("inventory:app", args=[name]))
    assert response.status_code == 200
    return response.content.decode()


def _section(html: str, env: str) -> str:
    start = html.index(f'<h2 id="env-{env}">')
    end = html.find("<h2 id=", start + 10)
    return html[start : end if end > 0 else None]


def test_on_call_gets_revert_and_roll_back_links_on_the_app_page(client):
    _seed(2)
    html = _app_page(client, user_with_role("oncall"), "svc-2-000")
    rollback = reverse("rollbacks:new")
    for env in ("dev", "stage", "prod"):
        section = _section(html, env)
        deployment = inv.Deployment.objects.get(application__name="svc-2-000", environment__name=env)
        assert (
            f'href="{rollback}?app=svc-2-000&amp;env={env}&amp;mode=commit&amp;sha={deployment.revision}"'
            in section
        )
        assert "Revert this commit" in section
        assert f'href="{rollback}?app=svc-2-000&amp;env={env}&amp;mode=previous"' in section
        assert "Roll back to previous" in section
    assert "Promote to" not in html


def test_the_app_page_hides_actions_the_user_may_not_take(client):
    _seed(2)
    viewer = _app_page(client, user_with_role("viewer"), "svc-2-000")
    assert "Revert this commit" not in viewer and "Roll back" not in viewer and "Promote to" not in viewer

    rm = _app_page(client, user_with_role("release_manager"), "svc-2-000")
    promote = reverse("promotions:new")
    # The one Promote button per step lives in the pipeline lane, between the two environments.
    lane = rm[rm.index("data-pipeline-lane") : rm.index('<h2 id="env-dev">')]
    assert f'href="{promote}?app=svc-2-000&amp;from=stage&amp;to=prod"' in lane
    assert "Promote to" not in _section(rm, "prod") and "from=prod" not in lane
    assert "Revert this commit" not in rm and "Roll back" not in rm

    # On call for prod of another project: nothing here.
    other = _scoped("oncall-payments", ("viewer", "*", "*"), ("oncall", "payments", "prod"))
    assert "Revert this commit" not in _app_page(client, other, "svc-2-000")  # project search
    # On call for prod of this project: prod only.
    prod_only = _scoped("oncall-search-prod", ("viewer", "*", "*"), ("oncall", "search", "prod"))
    page = _app_page(client, prod_only, "svc-2-000")
    assert "Revert this commit" in _section(page, "prod") and "Revert this commit" not in _section(
        page, "dev"
    )


def test_app_page_queries_do_not_grow_with_the_timeline(client, django_assert_max_num_queries):
    _seed(1)
    user = user_with_role("oncall")
    client.force_login(user)
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("inventory:app", args=["svc-1-000"]))
    app = inv.Application.objects.get(name="svc-1-000")
    argo = inv.ArgoApplication.objects.get(application=app, environment__name="prod")
    for i in range(2, 15):
        inv.Deployment.objects.create(
            argo_app=argo,
            history_id=i,
            application=app,
            environment=argo.environment,
            cluster=argo.cluster,
            revision=f"{i:040x}",
            deployed_at=argo.deployed_at,
        )
    with django_assert_max_num_queries(len(small.captured_queries)):
        html = client.get(reverse("inventory:app", args=["svc-1-000"])).content.decode()
    assert html.count("Revert this commit") == 16
