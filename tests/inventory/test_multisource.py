"""Multi-source applications: spec.sources and status.sync.revisions."""

from __future__ import annotations

import pytest

from inventory.models import ArgoApplication, Deployment

pytestmark = pytest.mark.django_db


@pytest.fixture
def argocd_options():
    return {"multi_source_apps": ["ledger"]}


def test_multi_source_apps_are_stored_with_their_git_revision(sandbox_inventory):
    rows = list(ArgoApplication.objects.filter(application__name="ledger"))
    assert rows and all(r.is_multi_source for r in rows)
    for row in rows:
        assert len(row.sources) == 2 and row.sources[1]["ref"] == "values"
        assert len(row.revisions) == 2
        assert row.revision == row.revisions[0] and len(row.revision) == 40
        assert row.path == f"environments/{row.environment.name}/ledger"
        deployments = list(Deployment.objects.filter(argo_app=row))
        assert deployments
        for d in deployments:
            assert len(d.revisions) == 2 and d.revision == d.revisions[0]
        latest = max(deployments, key=lambda d: d.history_id)
        assert row.deployed_revision == latest.revision
    single = ArgoApplication.objects.exclude(application__name="ledger").first()
    assert not single.is_multi_source and single.revisions == []
