"""The app page speaks of the app's own revision, and counts only commits a promotion carries."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory import models as inv
from inventory.matrix import MatrixFilters, deployment_matrix
from tests.factories import user_with_role
from tests.inventory.test_app_timeline import _lane, _prod_section
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db

APP = "svc-1-000"


def _commit(app: inv.Application, env: inv.Environment, message: str, *, carried: bool | None) -> inv.Commit:
    seq = (inv.Commit.objects.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
    now = timezone.now()
    commit = inv.Commit.objects.create(
        repository=app.repository, sha=f"{seq:040x}", seq=seq, author_name="a", author_email="a@x",
        authored_at=now, committer_name="a", committed_at=now, message=message,
    )  # fmt: skip
    inv.CommitTouch.objects.create(commit=commit, application=app, environment=env, seq=seq, carried=carried)
    return commit


def test_a_stage_only_commit_is_neither_waiting_in_the_lane_nor_behind_in_the_matrix(client):
    _seed(1)
    app = inv.Application.objects.get(name=APP)
    stage = inv.Environment.objects.get(name="stage")
    only_stage = _commit(app, stage, "stage log level", carried=False)
    inv.ArgoApplication.objects.filter(name=f"{APP}-stage-eu").update(
        deployed_revision=only_stage.sha, revision=only_stage.sha
    )
    user = user_with_role("release_manager")
    client.force_login(user)
    html = client.get(reverse("inventory:app", args=[APP])).content.decode()
    # The seed's one image bump waits; the stage-only log level is not counted nor listed.
    assert "1 commit</strong> waiting" in _lane(html)
    assert "stage log level" not in html.split("not yet in prod")[1]
    matrix = deployment_matrix(user=user, filters=MatrixFilters(q=APP))
    prod = [c for slot in matrix.rows[0].slots for c in slot if c.env_name == "prod"]
    assert [c.behind for c in prod] == [1]

    _commit(app, stage, "bump image", carried=True)
    latest = inv.Commit.objects.order_by("-seq").first()
    inv.ArgoApplication.objects.filter(name=f"{APP}-stage-eu").update(
        deployed_revision=latest.sha, revision=latest.sha
    )
    assert "2 commits</strong> waiting" in _lane(
        client.get(reverse("inventory:app", args=[APP])).content.decode()
    )
    matrix = deployment_matrix(user=user, filters=MatrixFilters(q=APP))
    assert [c.behind for c in matrix.rows[0].slots[2]] == [2]


def test_timeline_rows_show_the_apps_revision_beside_argo_cds(client):
    _seed(1)
    app = inv.Application.objects.get(name=APP)
    prod = inv.Environment.objects.get(name="prod")
    own = inv.Deployment.objects.get(application=app, environment=prod).revision
    # A later commit to another app: Argo CD syncs the repository head in a monorepo.
    other = inv.Application.objects.create(name="other", project="search", repository=app.repository)
    head = _commit(other, prod, "other app", carried=True)
    inv.Deployment.objects.filter(application=app, environment=prod).update(revision=head.sha)
    section = _prod_section(client)
    row = section[section.index("data-change-row") :]
    assert re.search(rf'title="{own}">{own[:8]}<', row), row[:600]
    assert "Argo CD synced" in row and f'title="{head.sha}"' in row
