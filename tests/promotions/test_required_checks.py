"""Required checks of a promotion's PR head (issue 17): read from the sandbox forge, judged, shown, recorded."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from django.urls import reverse
from django.utils import timezone

from accounts.models import RoleGrant
from audit.models import AuditEvent, ChangeRecord
from changes.sweeper import change_sweep
from promotions import services
from promotions.kind import PROMOTION
from promotions.models import Promotion
from sandbox.forge import signature
from tests.factories import UserFactory
from tests.promotions.helpers import WEBHOOK_SECRET, promotable_app

pytestmark = pytest.mark.django_db
RUN_URL = "https://ci.example/acme/gitops/runs/17"


def _open(sandbox, users, required: list[str]) -> Promotion:
    sandbox.prod.required_checks = required
    sandbox.prod.save(update_fields=["required_checks"])
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    services.promotion_branch_push(promotion_id=promotion.pk)  # pushed at the request
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    return promotion


def _report(sandbox, sha: str, state: str, *, context: str = "ci/validate", kind: str = "status") -> None:
    check = {"repo": "acme/gitops", "sha": sha, "context": context, "state": state, "target_url": RUN_URL}
    if kind != "status":
        check["kind"] = kind
    resp = requests.post(f"{sandbox.forge.base_url}/sandbox/checks", json=check, timeout=10)
    assert resp.status_code < 300, resp.text


def _track(promotion: Promotion) -> Promotion:
    services.promotion_track(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    return promotion


def _events(promotion: Promotion, action: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            target_type="promotion", target_id=str(promotion.pk), action=action
        ).order_by("sequence")
    )


def test_a_failed_required_check_is_a_visible_state_with_its_link_then_passes(
    sandbox, users, client, purge_broker
):
    promotion = _open(sandbox, users, ["ci/validate"])

    # Nothing reported yet: waiting, never success.
    promotion = _track(promotion)
    assert promotion.state == "pr_open" and promotion.checks_verdict == "waiting"
    assert promotion.checks_detail == "waiting for required checks: ci/validate"
    assert promotion.checks_badge == ("waiting for checks", "info")

    _report(sandbox, promotion.pr_head_sha, "failure")
    promotion = _track(promotion)
    assert promotion.checks_verdict == "checks_failed" and promotion.checks_sha == promotion.pr_head_sha
    assert promotion.checks_badge == ("CI failed: ci/validate", "bad")
    (failed,) = _events(promotion, "promotion.checks_failed")
    assert failed.after["failing"] == [{"name": "ci/validate", "state": "failure", "url": RUN_URL}]
    assert failed.after["sha"] == promotion.pr_head_sha and failed.message == "CI failed: ci/validate"
    record = ChangeRecord.objects.get(source_type="promotion", source_id__startswith=f"{promotion.pk}:")
    gate = next(g for g in record.gates if g["name"] == "required_checks")
    assert gate["passed"] is False and RUN_URL in gate["detail"]
    # Tracking again records nothing new.
    _track(promotion)
    assert len(_events(promotion, "promotion.checks_failed")) == 1

    client.force_login(users["viewer"])
    listing = client.get(reverse("promotions:list")).content.decode()
    assert "CI failed: ci/validate" in listing
    detail = client.get(promotion.get_absolute_url()).content.decode()
    assert 'id="checks"' in detail and "CI failed: ci/validate" in detail
    panel = client.get(reverse("promotions:checks", args=[promotion.pk]), HTTP_HX_REQUEST="true")
    html = panel.content.decode()
    assert panel.status_code == 200
    assert f'href="{RUN_URL}"' in html and "<strong>required</strong>" in html
    assert "data-checks-failed" in html and "data-ready-to-merge" not in html
    assert 'hx-trigger="every 10s"' in html  # the PR is open: a rerun or fix commit is picked up
    api = client.get(reverse("api-promotion", kwargs={"pk": promotion.pk})).json()["checks"]
    assert api["verdict"] == "checks_failed" and api["sha"] == promotion.pr_head_sha
    assert [(c["name"], c["url"], c["required"]) for c in api["items"]] == [("ci/validate", RUN_URL, True)]

    _report(sandbox, promotion.pr_head_sha, "success")
    promotion = _track(promotion)
    assert promotion.checks_verdict == "success"
    (passed,) = _events(promotion, "promotion.checks_passed")
    assert passed.before == {"checks_verdict": "checks_failed", "checks_sha": promotion.pr_head_sha}
    html = client.get(
        reverse("promotions:checks", args=[promotion.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "data-ready-to-merge" in html and "Ready to merge" in html


def test_check_runs_and_statuses_are_both_counted_with_any(sandbox, users, client, purge_broker):
    promotion = _open(sandbox, users, ["any"])
    _report(sandbox, promotion.pr_head_sha, "success")
    _report(sandbox, promotion.pr_head_sha, "failure", context="validate", kind="check_run")

    promotion = _track(promotion)

    assert promotion.checks_verdict == "checks_failed"
    assert {(c["name"], c["source"], c["state"]) for c in promotion.checks} == {
        ("ci/validate", "status", "success"),
        ("validate", "check_run", "failure"),
    }
    assert promotion.checks_badge == ("CI failed: validate", "bad")


def test_the_panel_reads_live_and_has_tracking_record_a_new_verdict(sandbox, users, client, purge_broker):
    promotion = _open(sandbox, users, ["ci/validate"])
    _report(sandbox, promotion.pr_head_sha, "pending")
    client.force_login(users["viewer"])

    html = client.get(
        reverse("promotions:checks", args=[promotion.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()

    assert 'data-check-state="pending"' in html and 'hx-trigger="every 3s"' in html
    assert "Waiting for checks" in html and "data-waiting-for-checks" in html
    promotion.refresh_from_db()
    assert promotion.checks_verdict == ""  # a page never writes; the tracking task records it


def test_a_viewer_outside_the_project_cannot_read_the_checks(sandbox, users, client):
    promotion = _open(sandbox, users, ["ci/validate"])
    outsider = UserFactory(username="olga", roles=[])
    RoleGrant.objects.create(user=outsider, role="viewer", project="someone-else")
    client.force_login(outsider)

    assert client.get(reverse("promotions:checks", args=[promotion.pk])).status_code == 404


def test_the_sweeper_follows_pending_checks_of_a_fresh_pr_more_often(sandbox, users, purge_broker):
    promotion = _open(sandbox, users, ["ci/validate"])
    now = timezone.now()
    Promotion.objects.filter(pk=promotion.pk).update(last_tracked_at=now - timedelta(seconds=20))
    assert change_sweep(kind=PROMOTION, now=now)["tracked"] == 1  # waiting for checks: polled
    Promotion.objects.filter(pk=promotion.pk).update(checks_verdict="checks_failed")
    assert change_sweep(kind=PROMOTION, now=now)["tracked"] == 0  # settled: the slow poll applies
    Promotion.objects.filter(pk=promotion.pk).update(
        checks_verdict="waiting", pr_opened_at=now - timedelta(hours=2)
    )
    assert change_sweep(kind=PROMOTION, now=now)["tracked"] == 0  # an old PR: the slow poll applies


def test_a_signed_ci_webhook_tracks_the_promotion_at_that_head(sandbox, users, client):
    promotion = _open(sandbox, users, ["ci/validate"])
    body = json.dumps(
        {
            "sha": promotion.pr_head_sha,
            "state": "success",
            "context": "ci/validate",
            "repository": {"full_name": "acme/gitops"},
        }
    ).encode()

    response = client.post(
        "/webhooks/forge/gitops/",
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="status",
        HTTP_X_HUB_SIGNATURE_256=signature(WEBHOOK_SECRET, body),
    )

    assert response.status_code == 202 and response.json() == {"ok": True, "event": "checks", "tracked": 1}
