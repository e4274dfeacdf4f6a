"""The rollback form says what runs now by the app's own revision, with Argo CD's beside it (issue 19, item 4)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.ingest import repository_ingest
from promotions import observed
from rollbacks.selectors import rollback_plan
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.promotions.helpers import promotable_app
from tests.promotions.test_app_revision import _other_app_change, _stage_only_change

pytestmark = pytest.mark.django_db(transaction=True)


def test_runs_now_is_the_apps_last_change_not_the_repository_head(client, sandbox, users):
    app = promotable_app(sandbox)
    other = next(a.name for a in sandbox.generated.apps if a.name != app.name)
    own = _stage_only_change(sandbox, app.name)
    head = _other_app_change(sandbox, other)
    sandbox.reconcile()
    # Synced too: "runs now" is the last sync's revision, which lags the compared one until then.
    wait_for(
        lambda: (
            observed.env_state(app, sandbox.stage).revision == head
            and observed.env_state(app, sandbox.stage).synced
        ),
        timeout=20,
        message="stage synced at the head",
    )
    sandbox.poll()
    repository_ingest(repository_id=sandbox.repository.pk)

    plan = rollback_plan(application=app, environment=sandbox.stage, mode="previous")
    assert plan.current_revision == head  # what Argo CD runs: the revert works from it
    assert plan.current_app_revision == own

    client.force_login(UserFactory(username="oscar", roles=["oncall"]))
    html = client.get(
        reverse("rollbacks:new"), {"app": app.name, "env": sandbox.stage.name, "mode": "previous"}
    ).content.decode()
    runs_now = html[html.index("<dt>Runs now</dt>") :].split("</dd>", 1)[0]
    assert own[:8] in runs_now and "Argo CD synced" in runs_now and head[:8] in runs_now
