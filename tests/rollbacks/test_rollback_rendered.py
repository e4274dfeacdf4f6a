"""A rollback's page shows Argo CD's rendered diff of the revert (what runs now → the revert's head)."""

from __future__ import annotations

import pytest

from rollbacks import services
from tests.rollbacks.sandbox_env import oncall
from tests.rollbacks.test_rollback_flow import _request

pytestmark = pytest.mark.django_db


def test_rollback_page_lazy_loads_the_rendered_diff_of_the_revert(sandbox, client):
    _, _merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    rollback = _request(sandbox, user)
    client.force_login(user)
    pending = client.get(f"/rollbacks/{rollback.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert "Rendered after the branch is pushed." in pending

    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    page = client.get(f"/rollbacks/{rollback.pk}/").content.decode()
    assert f'hx-get="/rollbacks/{rollback.pk}/rendered/"' in page
    html = client.get(f"/rollbacks/{rollback.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in html and "data-render-error" not in html
    assert '<span class="badge badge-ok">pass</span> <strong>Rendered by Argo CD</strong>' in html
    assert 'data-object-change="changed"' in html and "<code>Deployment.apps " in html
    assert ":9.9.9</span>" in html  # the line the revert removes


def test_the_rollback_pr_body_summarises_the_rendered_revert(sandbox):
    """The revert branch is pushed by the PR task itself: the body is written once it is, with its rendering."""
    _, _merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team))
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    body = sandbox.client().get_pull_request(rollback.pr_number).body
    section = body[body.index("### Rendered by Argo CD") :]
    assert "Rendered after the branch is pushed" not in section
    assert f"/rollbacks/{rollback.pk}/#rendered" in section
    assert f"`{rollback.pushed_head_sha[:12]}`" in section and "- changed: `Deployment.apps " in section
