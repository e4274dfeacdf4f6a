"""One revision per app and environment: the last commit that touched its paths, beside Argo CD's."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory import models as inv
from inventory.revisions import RevisionKey, app_revision, app_revisions
from tests.factories import ApplicationFactory, user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db


def _commit(repo: inv.GitRepository, message: str) -> inv.Commit:
    seq = (inv.Commit.objects.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
    now = timezone.now()
    return inv.Commit.objects.create(
        repository=repo,
        sha=f"{seq:040x}",
        seq=seq,
        author_name="a",
        author_email="a@x",
        authored_at=now,
        committer_name="a",
        committed_at=now,
        message=message,
    )


def test_the_app_revision_is_its_last_commit_at_or_before_argo_cds(client):
    _seed(1)
    app = inv.Application.objects.get(name="svc-1-000")
    prod = inv.Environment.objects.get(name="prod")
    own = inv.ArgoApplication.objects.get(application=app, environment=prod).deployed_revision
    # Another app's commit moves the branch head; Argo CD reports that head as synced for this app.
    other = ApplicationFactory(name="other", repository=app.repository)
    head = _commit(app.repository, "change other in prod")
    inv.CommitTouch.objects.create(commit=head, application=other, environment=prod, seq=head.seq)
    inv.ArgoApplication.objects.filter(application=app, environment=prod).update(
        deployed_revision=head.sha, revision=head.sha
    )
    rev = app_revision(app, prod, head.sha)
    assert rev.app == own and rev.argo == head.sha and rev.shown == own and rev.differs
    # A change to the app's shared base counts too.
    base = _commit(app.repository, "raise memory")
    inv.CommitTouch.objects.create(commit=base, application=app, environment=None, seq=base.seq)
    assert app_revision(app, prod, base.sha).app == base.sha
    assert app_revision(app, prod, head.sha).app == own  # the base change came after Argo CD's
    # Not ingested (yet): Argo CD's revision stands in.
    unknown = RevisionKey(app.repository_id, app.pk, prod.pk, "f" * 40)
    assert app_revisions([unknown])[unknown].shown == "f" * 40

    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    cell = html.split('data-argo-app="svc-1-000-prod-eu"', 1)[1].split('data-argo-app="', 1)[0]
    assert f'title="{own}">{own[:8]}</a>' in cell
    assert "Argo CD synced" in cell and head.sha[:8] in cell

    api = client.get("/api/v1/deployments", {"app": "svc-1-000", "environment": "prod"}).json()["deployments"]
    assert [(r["revision"], r["app_revision"]) for r in api] == [(head.sha, own)]


def test_the_matrix_shows_no_zero_behind_note(client):
    _seed(1)
    app = inv.Application.objects.get(name="svc-1-000")
    # stage runs what dev ran (and runs): nothing is behind, and nothing says "0 commits behind".
    dev = inv.ArgoApplication.objects.get(application=app, environment__name="dev")
    inv.ArgoApplication.objects.filter(application=app, environment__name="stage").update(version=dev.version)
    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    assert "0 commits behind" not in html
    assert "1 commit behind stage" in html  # prod still is
