"""Exceptions an auditor must see, the page that lists them, and the scan that announces them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from accounts.roles import Role
from audit.models import AuditEvent
from insight.models import Finding
from insight.selectors import exceptions_list
from insight.services import findings_scan
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, EnvironmentFactory, GitRepositoryFactory, user_with_role

from .builders import (
    ArgoApplicationFactory,
    ChangeRecordFactory,
    ClusterFactory,
    CommitFactory,
    DeploymentFactory,
    PromotionFactory,
    PromotionItemFactory,
    RollbackFactory,
    sha,
)

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert('x')</script>"


@pytest.fixture
def world():
    now = timezone.now()
    repo = GitRepositoryFactory(last_ingested_sha=sha("c1"))
    stage = EnvironmentFactory(name="stage", order=1)
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    pay = ApplicationFactory(name="pay-api", project="payments", repository=repo)
    shop = ApplicationFactory(name="shop-web", project="checkout", repository=repo)
    CommitFactory(repository=repo, sha=sha("c1"), seq=1)

    # 1. Merged but not deployed: a promotion merged 30 min ago, a rollback merged 5 min ago.
    promotion = PromotionFactory(
        source_env=stage, target_env=prod, repository=repo, state="merged", merged_at=now - timedelta(minutes=30),
        merge_commit_sha=sha("merge"),
    )  # fmt: skip
    PromotionItemFactory(promotion=promotion, application=pay)
    done = PromotionFactory(
        source_env=stage,
        target_env=prod,
        repository=repo,
        state="healthy",
        merged_at=now - timedelta(hours=3),
    )
    PromotionItemFactory(promotion=done, application=shop)
    rollback = RollbackFactory(
        application=shop, environment=prod, state=RollbackRequest.State.MERGED,
        merged_at=now - timedelta(minutes=5), merge_commit_sha=sha("revert"),
    )  # fmt: skip

    # 2. Revisions running in prod: one known, one unknown; an unknown one in stage does not count.
    eu = ClusterFactory(name="prod-eu-west-1", environment=prod)
    us = ClusterFactory(name="prod-us-east-1", environment=prod)
    ArgoApplicationFactory(application=pay, environment=prod, cluster=eu, revision=sha("c1"))
    ghost = ArgoApplicationFactory(application=shop, environment=prod, cluster=us, revision=sha("ghost"))
    ArgoApplicationFactory(
        application=pay, environment=stage, cluster=ClusterFactory(name="stage-eu-west-1"), revision=sha("x")
    )

    # 3. Deployments without a change record (out of band) in prod; not in stage.
    oob = DeploymentFactory(
        argo_app=ghost,
        revision=sha("ghost"),
        out_of_band=True,
        initiated_by="mallory",
        deployed_at=now - timedelta(hours=1),
    )
    DeploymentFactory(
        argo_app=ghost, revision=sha("c1"), out_of_band=False, deployed_at=now - timedelta(hours=2)
    )

    # 4. and 5. Change records.
    ChangeRecordFactory(
        app="pay-api", requester_name=HOSTILE, approvers=[HOSTILE], separation_of_duties_ok=False
    )
    ChangeRecordFactory(
        app="shop-web", project="checkout", emergency=True, approvers=[], requester_name="oncall"
    )
    ChangeRecordFactory(app="pay-api", emergency=True, approvers=["carol"])  # approved afterwards
    ChangeRecordFactory(app="pay-api", emergency=True, approvers=[], outcome="abandoned")  # never happened
    ChangeRecordFactory(app="pay-api")  # an ordinary, four-eyes change
    return {"promotion": promotion, "rollback": rollback, "ghost": ghost, "oob": oob, "now": now}


def _keys(report, kind):
    return [row.key for row in report.rows[kind]]


def test_each_exception_kind_finds_exactly_its_rows(world):
    report = exceptions_list(user=None)
    assert report.sync_lag_minutes == 15
    assert [(r.app, r.environment) for r in report.rows["unsynced_merge"]] == [("pay-api", "prod")]
    assert _keys(report, "unknown_revision") == [f"revision:{world['ghost'].pk}:{sha('ghost')}"]
    assert "is not in the ingested history of gitops (main)" in report.rows["unknown_revision"][0].summary
    assert _keys(report, "out_of_band") == [f"deployment:{world['oob'].pk}"]
    assert "by mallory" in report.rows["out_of_band"][0].summary
    assert len(report.rows["self_approved"]) == 1
    assert [r.app for r in report.rows["emergency_unapproved"]] == ["shop-web"]
    assert report.totals == {
        "unsynced_merge": 1,
        "unknown_revision": 1,
        "out_of_band": 1,
        "self_approved": 1,
        "emergency_unapproved": 1,
    }
    # A shorter threshold catches the rollback merged 5 minutes ago too.
    assert len(exceptions_list(user=None, sync_lag_minutes=3).rows["unsynced_merge"]) == 2


def test_project_scoped_users_see_only_their_projects(world):
    user = user_with_role(Role.RELEASE_MANAGER, "rm-pay")
    user.groups.clear()
    RoleGrant.objects.create(user=user, role=Role.RELEASE_MANAGER, project="pay*", environment="*")
    report = exceptions_list(user=user, sync_lag_minutes=1)
    apps = {row.app for rows in report.rows.values() for row in rows}
    assert apps == {"pay-api"}


def test_page_shows_exceptions_escaped(world, client):
    client.force_login(user_with_role(Role.VIEWER))
    response = client.get(reverse("insight:drift"), {"minutes": "3"})
    assert response.status_code == 200
    html = response.content.decode()
    assert HOSTILE not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "Approved by its requester" in html and "Emergency change without after-the-fact approval" in html
    assert f"rollback #{world['rollback'].pk} merged" in html


def test_scan_announces_each_finding_once_and_its_resolution(world):
    first = findings_scan()
    assert sorted(k.split(":", 1)[0] for k in first.opened) == [
        "emergency_unapproved",
        "out_of_band",
        "self_approved",
        "unknown_revision",
        "unsynced_merge",
    ]
    detected = AuditEvent.objects.filter(action="exception.detected")
    assert detected.count() == 5
    assert detected.filter(out_of_band=True).count() == 1
    assert findings_scan().opened == []  # nothing new: nothing announced twice

    promotion = world["promotion"]
    promotion.state = "deployed"
    promotion.save(update_fields=["state"])
    second = findings_scan()
    assert second.resolved == [
        f"unsynced_merge:promotion:{promotion.pk}:{promotion.items.get().application_id}"
    ]
    resolved = AuditEvent.objects.get(action="exception.resolved")
    assert resolved.app == "pay-api" and resolved.message.startswith("resolved: promotion #")
    assert Finding.objects.filter(resolved_at__isnull=True).count() == 4


def test_scan_announces_drift_after_the_lag(world, settings):
    settings.INSIGHT_SYNC_LAG_MINUTES = 10
    ghost = world["ghost"]
    ghost.sync_status = "OutOfSync"
    ghost.out_of_sync_since = timezone.now() - timedelta(minutes=5)
    ghost.save()
    assert not any(k.startswith("drift:") for k in findings_scan().opened)
    ghost.out_of_sync_since = timezone.now() - timedelta(minutes=11)
    ghost.save()
    assert f"drift:{ghost.pk}" in findings_scan().opened
    event = AuditEvent.objects.get(action="drift.detected")
    assert event.app == "shop-web" and event.environment == "prod"
