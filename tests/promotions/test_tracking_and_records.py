"""Change records per app with versions and revisions, stuck rollouts, tracking errors, the sweeper."""

from __future__ import annotations

import ast
import os
from datetime import timedelta

import pytest
import requests
from celery.signals import before_task_publish
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from accounts.roles import Role
from audit.exports import stream_changes_csv
from audit.models import AuditEvent, ChangeRecord
from audit.selectors import change_record_evidence
from inventory.models import Application
from inventory.revisions import app_revision
from promotions import gitops, observed, services
from promotions.models import Promotion, PromotionItem, PromotionState
from tests.conftest import wait_for
from tests.factories import EnvironmentFactory, GitRepositoryFactory, UserFactory
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState


def _actions(promotion: Promotion) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _merged(sandbox, users, app=None, *, before_merge=None) -> Promotion:
    """Request, approve, open the PR, (prepare the fault), merge: the promotion is then tracked."""
    app = app or promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    if before_merge is not None:
        before_merge(promotion)
    sandbox.merge(promotion.pr_number)
    return promotion


def _two_apps_in_two_projects(sandbox) -> list[Application]:
    apps = [
        a
        for a in Application.objects.order_by("name")
        if observed.env_state(a, sandbox.stage).images != observed.env_state(a, sandbox.prod).images
    ]
    if len(apps) < 2:
        pytest.skip("fewer than two apps differ between stage and prod")
    first, second = apps[:2]
    if first.project == second.project:
        Application.objects.filter(pk=second.pk).update(project=f"{second.project}-other")
        # As if it had always been there: records keep the project they were written with.
        ChangeRecord.objects.filter(app=second.name).update(project=f"{second.project}-other")
        second.refresh_from_db()
    return [first, second]


def test_a_release_train_writes_one_change_record_per_app_with_versions_and_revisions(
    sandbox, users, purge_broker, client
):
    apps = _two_apps_in_two_projects(sandbox)
    # The app's own revision in prod (its last commit), not the branch head Argo CD reports.
    ran_before = {
        a.name: app_revision(a, sandbox.prod, observed.env_state(a, sandbox.prod).revision).shown
        for a in apps
    }
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=apps, source_env=sandbox.stage, target_env=sandbox.prod
    )
    items = {i.application.name: i for i in promotion.items.select_related("application")}

    # At request time: one record per app, what the target ran before and the versions.
    records = {r.app: r for r in ChangeRecord.objects.filter(source_type="promotion")}
    assert set(records) == {a.name for a in apps}
    for app in apps:
        record, item = records[app.name], items[app.name]
        assert record.source_id == f"{promotion.pk}:{app.name}"
        assert record.project == app.project
        assert record.revision_before == ran_before[app.name] and len(record.revision_before) == 40
        assert record.versions_before == {app.name: item.version_before}
        assert record.versions_after == {app.name: item.version_after}
        assert record.version_before_display == item.version_before
        assert record.outcome == "pending" and record.requester_name == "rita"
        assert "release train" in record.title

    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    sandbox.merge(promotion.pr_number)

    def healthy() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) == S.HEALTHY

    wait_for(healthy, timeout=40, interval=0.5, message="release train healthy")
    promotion.refresh_from_db()
    mirror = gitops.mirror_for(promotion.repository)
    for app in apps:
        record = ChangeRecord.objects.get(source_type="promotion", source_id=f"{promotion.pk}:{app.name}")
        item = PromotionItem.objects.get(promotion=promotion, application=app)
        # When deployed: the revision Argo CD runs now (it contains the merge), not "—".
        assert (
            record.revision_after == item.deployed_revision == observed.env_state(app, sandbox.prod).revision
        )
        assert mirror.is_ancestor(promotion.merge_commit_sha, record.revision_after)
        assert record.outcome == "succeeded" and record.lead_time is not None
        assert record.approvers == ["alex"] and record.separation_of_duties_ok is True
        # The evidence is the promotion's ledger events.
        evidence = [e.action for e in change_record_evidence(record)]
        assert evidence[0] == "promotion.requested" and evidence[-1] == "promotion.healthy"
    assert not ChangeRecord.objects.filter(source_id=str(promotion.pk)).exists()

    # A project-scoped auditor sees the record of their app only, and its evidence links work.
    scoped = UserFactory(username="paula")
    RoleGrant.objects.create(user=scoped, role=Role.AUDITOR, project=apps[0].project)
    client.force_login(scoped)
    listing = client.get(reverse("audit:change_list")).content.decode()
    assert f"{apps[0].name} → " in listing and f"{apps[1].name} → " not in listing
    mine = ChangeRecord.objects.get(source_id=f"{promotion.pk}:{apps[0].name}")
    theirs = ChangeRecord.objects.get(source_id=f"{promotion.pk}:{apps[1].name}")
    page = client.get(reverse("audit:change_detail", args=[mine.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "promotion.healthy" in body and items[apps[0].name].version_after in body
    assert client.get(reverse("audit:change_detail", args=[theirs.pk])).status_code == 404
    first_event = change_record_evidence(mine)[0]
    assert client.get(reverse("audit:event_detail", args=[first_event.sequence])).status_code == 200


def test_a_failed_argo_cd_sync_after_the_merge_fails_the_promotion_with_the_reason(
    sandbox, users, purge_broker, client
):
    app = promotable_app(sandbox)
    promotion = _merged(
        sandbox, users, app, before_merge=lambda p: sandbox.argo_fault(fail_sync_apps=[app.name])
    )

    def settled() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) in (S.FAILED, S.HEALTHY, S.DEGRADED)

    wait_for(settled, timeout=30, interval=0.5, message="the promotion settled")
    promotion.refresh_from_db()
    assert promotion.state == S.FAILED, promotion.state
    assert promotion.failure_reason.startswith("Argo CD could not sync the merged change into prod")
    assert "sync failed" in promotion.failure_reason and "sandbox fault" in promotion.failure_reason
    assert promotion.failed_at is not None
    assert _actions(promotion)[-1] == "promotion.sync_failed"
    # The app is free for the next promotion, and the change record says it failed.
    assert not PromotionItem.objects.filter(promotion=promotion, active=True).exists()
    record = ChangeRecord.objects.get(source_id=f"{promotion.pk}:{app.name}")
    assert record.outcome == "failed"

    client.force_login(users["viewer"])
    body = client.get(promotion.get_absolute_url()).content.decode()
    assert "Argo CD could not sync the merged change" in body
    assert "Roll back" in body


def test_a_merge_argo_cd_does_not_deploy_in_time_fails_the_promotion(sandbox, users, purge_broker, settings):
    settings.PROMOTION_DEPLOY_TIMEOUT_MINUTES = 30
    app = promotable_app(sandbox)
    # A deny window opened after the PR: Argo CD will not sync the merge.
    promotion = _merged(
        sandbox, users, app, before_merge=lambda p: sandbox.argo_fault(deny_sync_window={"project": "*"})
    )
    sandbox.reconcile()
    assert services.promotion_track(promotion_id=promotion.pk) == S.MERGED
    sandbox.reconcile()
    assert services.promotion_track(promotion_id=promotion.pk) == S.MERGED

    Promotion.objects.filter(pk=promotion.pk).update(merged_at=timezone.now() - timedelta(minutes=31))
    assert services.promotion_track(promotion_id=promotion.pk) == S.FAILED
    promotion.refresh_from_db()
    assert "does not run the merged change 30 min after the merge" in promotion.failure_reason
    assert "OutOfSync" in promotion.failure_reason
    assert _actions(promotion)[-1] == "promotion.deploy_timed_out"
    assert ChangeRecord.objects.get(source_id=f"{promotion.pk}:{app.name}").outcome == "failed"


def test_a_pull_request_the_forge_no_longer_knows_is_shown_on_the_page(sandbox, users, purge_broker, client):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    Promotion.objects.filter(pk=promotion.pk).update(pr_number=9999)

    assert services.promotion_track(promotion_id=promotion.pk) == S.PR_OPEN
    assert services.promotion_track(promotion_id=promotion.pk) == S.PR_OPEN
    promotion.refresh_from_db()
    assert promotion.tracking_error.startswith("cannot read pull request #9999")
    assert "not found" in promotion.tracking_error
    assert _actions(promotion).count("promotion.tracking_error") == 1  # once, not at every poll

    client.force_login(users["viewer"])
    body = client.get(promotion.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    assert "Tracking problem: cannot read pull request #9999" in body
    api = client.get(f"/api/v1/promotions/{promotion.pk}").json()
    assert api["tracking_error"].startswith("cannot read pull request #9999")


def test_promotions_read_the_inventory_mirror(sandbox, users, settings):
    from inventory.mirrors import mirror_path_for

    app = promotable_app(sandbox)
    services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    mirror = gitops.mirror_for(sandbox.repository)
    assert mirror.path == mirror_path_for(sandbox.repository)
    assert (mirror.path / "HEAD").exists()
    assert not (settings.MIRRORS_DIR / "promotions").exists()


@pytest.fixture
def published():
    """The messages the code under test publishes (headers), whoever consumes them afterwards."""
    sent: list[dict] = []

    def record(sender=None, headers=None, **kwargs):
        sent.append(dict(headers or {}))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def test_the_sweeper_tracks_merged_rows_every_sweep_and_open_prs_rarely(purge_broker, published):
    prod = EnvironmentFactory(name="prod", order=30)
    stage = EnvironmentFactory(name="stage", order=20)
    repository = GitRepositoryFactory()
    now = timezone.now()

    def row(state: str, tracked_ago: float | None) -> Promotion:
        return Promotion.objects.create(
            state=state,
            source_env=stage,
            target_env=prod,
            repository=repository,
            last_tracked_at=None if tracked_ago is None else now - timedelta(seconds=tracked_ago),
        )

    merged = row(S.MERGED, 6)
    deployed = row(S.DEPLOYED, 8)
    row(S.MERGED, 1)  # a follow-up task just tracked it
    row(S.PR_OPEN, 60)  # webhooks drive open PRs; polled every few minutes
    polled = row(S.PR_OPEN, 400)
    row(S.HEALTHY, 600)

    result = services.promotions_sweep(now=now)

    assert result["tracked"] == 3
    sent = published
    assert sorted(ast.literal_eval(h["argsrepr"])[0] for h in sent) == sorted(
        [merged.pk, deployed.pk, polled.pk]
    )
    assert all(h["task"] == "promotions.tasks.promotion_track_task" and h["expires"] for h in sent)


def test_sweeps_run_every_ten_seconds_and_expire_when_late():
    if "SWEEP_INTERVAL_SECONDS" not in os.environ:
        assert django_settings.SWEEP_INTERVAL_SECONDS == 10
    interval = float(django_settings.SWEEP_INTERVAL_SECONDS)
    for name in ("promotions-sweep", "rollbacks-sweep"):
        entry = django_settings.CELERY_BEAT_SCHEDULE[name]
        assert entry["schedule"] == interval
        assert interval < entry["options"]["expires"] < django_settings.CELERY_TASK_TIME_LIMIT
    assert (
        django_settings.CELERY_RETRY_BACKOFF_MAX
        < django_settings.CELERY_TASK_TIME_LIMIT
        < django_settings.CELERY_VISIBILITY_TIMEOUT
    )


def test_the_change_record_names_who_merged_on_the_forge_and_argo_cds_sync_result(
    sandbox, users, purge_broker
):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    # Someone other than the portal merges on the forge.
    resp = requests.post(
        f"{sandbox.forge.base_url}/sandbox/pulls/acme/gitops/{promotion.pr_number}/merge",
        json={"user": "alice"},
        timeout=20,
    )
    resp.raise_for_status()

    def healthy() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) == S.HEALTHY

    wait_for(healthy, timeout=40, interval=0.5, message="promotion healthy")
    promotion.refresh_from_db()
    assert promotion.merged_by == "alice"
    record = ChangeRecord.objects.get(source_type="promotion", source_id=f"{promotion.pk}:{app.name}")
    assert record.merged_by == "alice"
    result = record.sync_result
    assert result["phase"] == "Succeeded"
    assert result["revision"] == record.revision_after
    assert gitops.mirror_for(promotion.repository).is_ancestor(promotion.merge_commit_sha, result["revision"])
    assert result["resources"]["total"] >= 1 and result["resources"].get("Synced", 0) >= 1
    assert result["started_at"] and result["finished_at"]
    # The ledger names who merged, and the CSV export carries both.
    merged = AuditEvent.objects.get(
        target_type="promotion", target_id=str(promotion.pk), action="promotion.merged"
    )
    assert merged.after["merged_by"] == "alice"
    csv_text = "".join(stream_changes_csv([record]))
    assert "alice" in csv_text and "Succeeded" in csv_text and result["revision"] in csv_text
