"""The lane's "N commits waiting", the matrix's "behind" and the preview's commit list agree.

A commit to the source overlay that changes only what the promotion does not carry (a stage-only
setting beside the image pin) never reaches the target: none of the three counts or lists it.
"""

from __future__ import annotations

import pytest

from inventory.appdetail import app_detail, commits_between, pipeline_lane
from inventory.ingest import repository_ingest
from inventory.matrix import MatrixFilters, deployment_matrix
from inventory.models import Commit
from promotions import observed, services
from tests.conftest import wait_for
from tests.promotions.helpers import promotable_app
from tests.promotions.test_app_revision import _stage_only_change

pytestmark = pytest.mark.django_db(transaction=True)


def test_lane_matrix_and_preview_count_only_commits_the_promotion_carries(sandbox, users):
    app = promotable_app(sandbox)
    own = _stage_only_change(sandbox, app.name)
    sandbox.reconcile()
    wait_for(
        lambda: (
            observed.env_state(app, sandbox.stage).revision == own
            and observed.env_state(app, sandbox.stage).synced
        ),
        timeout=20,
        message="stage synced at the stage-only change",
    )
    sandbox.poll()
    repository_ingest(repository_id=sandbox.repository.pk)
    assert Commit.objects.filter(sha=own).exists()

    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    listed = [c.sha for c in preview.items[0].commits]
    assert listed and own not in listed

    waiting = [c.sha for c in commits_between(application=app, from_env=sandbox.stage, to_env=sandbox.prod)]
    assert own not in waiting
    assert waiting == listed

    lane = {s.environment: s for s in pipeline_lane(app_detail(application=app, user=users["rm"]))}
    assert lane["stage"].waiting == len(listed)

    matrix = deployment_matrix(user=users["rm"], filters=MatrixFilters(q=app.name))
    row = next(r for r in matrix.rows if r.application.pk == app.pk)
    prod_cells = [c for slot in row.slots for c in slot if c.env_name == "prod"]
    assert prod_cells and all(c.behind == len(listed) for c in prod_cells), [c.behind for c in prod_cells]
