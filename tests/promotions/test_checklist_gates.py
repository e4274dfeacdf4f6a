"""The zero-downtime checklist and the secret scan as promotion gates, against the sandbox.

A promotion whose deployment lacks a readiness probe shows a blocking gate in prod (a warning
where the environment says `warn`); an approver other than the requester overrides it with a
reason (ledger event); a secret in the change refuses it with file, line and detector, and the
value appears nowhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from audit.models import AuditEvent, ChangeRecord
from changes.checklist import environment_modes
from promotions import gitops, services
from promotions.models import Promotion, PromotionState
from tests.promotions.helpers import promotable_app
from tests.sandbox_fixtures import commit_files

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState
# Built at run time so that this file holds no literal a scanner would flag.
AWS_KEY = "AKIA" + "4OPQRSTUVWXYZ234"


def _drop_readiness_probe(sandbox, app) -> None:
    path = f"apps/{app.name}/base/deployment.yaml"
    text = sandbox.file("main", path)
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "readinessProbe:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    commit_files(
        sandbox.bare, {path: "".join(lines[:start] + lines[end:])}, f"{app.name}: drop the readiness probe"
    )


def _preview(sandbox, user, app):
    return services.promotion_preview(
        actor=user, applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )


def _gate(gates, name):
    return next(g for g in gates if (g["name"] if isinstance(g, dict) else g.name) == name)


def test_missing_readiness_probe_blocks_until_an_approver_overrides_it(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    _drop_readiness_probe(sandbox, app)
    preview = _preview(sandbox, users["rm"], app)
    gate = _gate(preview.items[0].gates, "checklist.readiness_probe")
    assert (gate.passed, gate.blocking, gate.overridable) == (False, True, True)
    assert f"Deployment {app.name}" in gate.detail or app.name in gate.detail
    assert gate.findings[0]["container"] == app.name and gate.findings[0]["message"] == "no readinessProbe"
    assert preview.failing and not preview.refusing  # requestable: an approver decides
    passing = [g.name for g in preview.items[0].gates if g.name.startswith("checklist.")]
    assert passing == ["checklist.readiness_probe"]  # the rest of the checklist passes

    # The preview page shows the blocking gate and that it can still be requested.
    client.force_login(users["rm"])
    page = client.get("/promotions/new/", {"app": app.name, "from": "stage", "to": "prod"}).content.decode()
    assert "Zero-downtime: Readiness probe on every container" in page
    assert "no readinessProbe" in page and "cannot be approved until an approver other than you" in page

    promotion = services.promotion_request_create(
        actor=users["rm_approver"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)  # pushed at the request
    assert promotion.state == S.REQUESTED
    with pytest.raises(services.PromotionRefused, match="blocked by the zero-downtime checklist"):
        services.promotion_approve(promotion=promotion, actor=users["approver"])
    # The requester cannot override, even holding the approver role.
    with pytest.raises(PermissionDenied, match="four-eyes"):
        services.promotion_checklist_override(
            promotion=promotion, actor=users["rm_approver"], reason="trust me, fine"
        )
    assert AuditEvent.objects.filter(action="auth.denied", target_id=str(promotion.pk)).exists()
    # Nor a release manager without the approver role.
    with pytest.raises(PermissionDenied):
        services.promotion_checklist_override(promotion=promotion, actor=users["rm"], reason="trust me, fine")
    with pytest.raises(services.PromotionRefused, match="needs a reason"):
        services.promotion_checklist_override(promotion=promotion, actor=users["approver"], reason="ok")

    # The detail page tells the approver what blocks and offers the override.
    client.force_login(users["approver"])
    detail = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert "Blocked by the zero-downtime checklist" in detail and "Override the checklist" in detail
    reason = "probe lands in the next release; traffic is drained by hand"
    response = client.post(f"/promotions/{promotion.pk}/override-checklist/", {"reason": reason})
    assert response.status_code == 302
    promotion.refresh_from_db()
    assert promotion.checklist_override_reason == reason and promotion.checklist_overridden_by_name == "alex"
    assert _gate(promotion.gates, "checklist.readiness_probe")["overridden"] == reason
    event = AuditEvent.objects.get(action="promotion.checklist_overridden", target_id=str(promotion.pk))
    assert event.actor_name == "alex" and event.after["reason"] == reason
    assert event.after["gates"][0]["name"] == "checklist.readiness_probe"
    detail = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert "Zero-downtime checklist overridden by" in detail and reason in detail
    with pytest.raises(services.PromotionRefused, match="no blocking"):
        services.promotion_checklist_override(promotion=promotion, actor=users["approver2"], reason=reason)

    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ok with the override")
    promotion.refresh_from_db()
    assert promotion.state in (S.APPROVED, S.PR_OPENING, S.PR_OPEN)
    record = ChangeRecord.objects.get(source_type="promotion", source_id=f"{promotion.pk}:{app.name}")
    # The record keeps every evaluation: the request's failing probe, then the override.
    probe = [g for g in record.gates if g["name"] == "checklist.readiness_probe"]
    assert [g["evaluation"] for g in probe][:1] == ["at request"] and "OVERRIDDEN" not in probe[0]["detail"]
    assert probe[-1]["evaluation"] == "after an approver's checklist override"
    assert f"[OVERRIDDEN by alex: {reason}]" in probe[-1]["detail"]


def test_warn_mode_shows_a_warning_and_does_not_block(sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    _drop_readiness_probe(sandbox, app)
    sandbox.prod.checklist = {"readiness_probe": "warn"}
    sandbox.prod.save()
    gate = _gate(_preview(sandbox, users["rm"], app).items[0].gates, "checklist.readiness_probe")
    assert (gate.passed, gate.blocking, gate.status) == (False, False, "warning")
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)  # pushed at the request
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    promotion.refresh_from_db()
    assert promotion.state != S.REQUESTED
    # `off` drops the check altogether.
    sandbox.prod.checklist = {"readiness_probe": "off"}
    sandbox.prod.save()
    assert environment_modes(sandbox.prod, app)["readiness_probe"] == "off"


def test_secret_in_the_change_refuses_it_and_the_value_appears_nowhere(client, sandbox, users, caplog):
    caplog.set_level(logging.DEBUG)
    app = promotable_app(sandbox)
    app.strategy, app.strategy_options = "copy-paths", {"paths": ["config.yaml"]}
    app.save()
    config = f"settings:\n  region: eu-west-1\n  aws_access_key_id: {AWS_KEY}\n"
    commit_files(sandbox.bare, {f"environments/stage/{app.name}/config.yaml": config}, "stage config")
    sandbox.reconcile()
    sandbox.poll()

    preview = _preview(sandbox, users["rm"], app)
    gate = _gate(preview.items[0].gates, "secret_scan")
    assert (gate.passed, gate.blocking, gate.overridable) == (False, True, False)
    assert gate.findings == (
        {"file": f"environments/prod/{app.name}/config.yaml", "line": 3, "detector": "AWS Access Key"},
    )
    assert "nobody can override" in gate.detail and preview.refusing
    with pytest.raises(services.PromotionRefused, match=r"config.yaml line 3: AWS Access Key") as refused:
        services.promotion_request_create(
            actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
        )
    assert AWS_KEY not in refused.value.message
    assert not Promotion.objects.exists()

    client.force_login(users["rm"])
    page = client.get("/promotions/new/", {"app": app.name, "from": "stage", "to": "prod"}).content.decode()
    assert "AWS Access Key" in page and "Nobody can override this gate" in page
    posted = client.post(
        "/promotions/request/", {"app": app.name, "from": "stage", "to": "prod"}, follow=True
    )
    assert "AWS Access Key" in posted.content.decode()
    for html in (page, posted.content.decode()):
        assert AWS_KEY not in html
    assert AWS_KEY not in caplog.text
    assert AWS_KEY not in json.dumps(
        list(AuditEvent.objects.values("before", "after", "message")), default=str
    )
    with connection.cursor() as cursor:  # nothing the portal wrote holds it
        for table in ("promotions_promotion", "audit_auditevent", "audit_changerecord"):
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE CAST({table}.* AS text) LIKE %s", [f"%{AWS_KEY}%"]
            )
            assert cursor.fetchone()[0] == 0, table

    # A known false positive listed in the repository's baseline is allowlisted.
    baseline = {
        "version": "1.5.0",
        "results": {
            f"environments/prod/{app.name}/config.yaml": [
                {
                    "type": "AWS Access Key",
                    "hashed_secret": hashlib.sha1(AWS_KEY.encode()).hexdigest(),
                    "line_number": 3,
                }
            ]
        },
    }
    commit_files(sandbox.bare, {".secrets.baseline": json.dumps(baseline)}, "baseline")
    time.sleep(gitops.FETCH_MIN_INTERVAL + 0.1)  # the mirror fetches again after its throttle
    gate = _gate(_preview(sandbox, users["rm"], app).items[0].gates, "secret_scan")
    assert gate.passed and "1 allowlisted by .secrets.baseline" in gate.detail


def test_at_pr_time_the_checklist_runs_on_argo_cds_rendering_and_the_override_carries(
    sandbox, users, purge_broker
):
    from promotions import pullrequests

    app = promotable_app(sandbox)
    _drop_readiness_probe(sandbox, app)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)  # pushed at the request
    reason = "probe lands in the next release; traffic is drained by hand"
    services.promotion_checklist_override(promotion=promotion, actor=users["approver"], reason=reason)
    services.promotion_approve(promotion=Promotion.objects.get(pk=promotion.pk), actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pushed_head_sha or promotion.pr_head_sha

    # The branch exists now: Argo CD renders it, and the checklist runs on what it rendered.
    items = list(promotion.items.select_related("application"))
    rendered = pullrequests._recheck_gates(promotion, items, gitops.mirror_for(promotion.repository))
    assert rendered and all(r.ok for r in rendered)
    gate = _gate(promotion.gates, "checklist.readiness_probe")
    assert "rendered by Argo CD at" in gate["detail"] and gate["overridden"] == reason
    assert gate["findings"][0]["destination"] == rendered[0].destination
    assert _gate(promotion.gates, "secret_scan")["passed"]


def test_the_pushed_head_is_checked_on_argo_cds_rendering_before_anyone_approves(
    sandbox, users, purge_broker
):
    app = promotable_app(sandbox)
    _drop_readiness_probe(sandbox, app)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    assert "rendered after the branch is pushed" in _gate(promotion.gates, "rendered")["detail"]

    services.promotion_branch_push(promotion_id=promotion.pk)

    promotion.refresh_from_db()
    rendered = _gate(promotion.gates, "rendered")
    assert rendered["passed"] and "after the branch is pushed" not in rendered["detail"]
    probe = _gate(promotion.gates, "checklist.readiness_probe")
    assert "rendered by Argo CD at" in probe["detail"] and not probe["passed"] and probe["blocking"]
    with pytest.raises(services.PromotionRefused, match="zero-downtime checklist"):
        services.promotion_approve(promotion=promotion, actor=users["approver"])


@pytest.mark.parametrize(
    ("gate", "refused"),
    [
        ({"name": "rendered", "passed": False, "blocking": True, "transient": False}, True),
        ({"name": "secret_scan", "passed": False, "blocking": True, "transient": False}, True),
        # Argo CD was down when the branch was pushed: asked again at the approval, it renders now.
        ({"name": "rendered", "passed": False, "blocking": True, "transient": True}, False),
    ],
)
def test_a_head_argo_cd_cannot_render_or_that_holds_a_secret_cannot_be_approved(
    sandbox, users, purge_broker, gate, refused
):
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    failing = {
        "label": "the gate",
        "detail": "ComparisonError: kustomize build failed",
        "overridable": False,
        **gate,
    }
    Promotion.objects.filter(pk=promotion.pk).update(gates=[failing])
    promotion.refresh_from_db()
    if refused:
        with pytest.raises(services.PromotionRefused, match="cannot be approved: the gate: ComparisonError"):
            services.promotion_approve(promotion=promotion, actor=users["approver"])
    else:
        services.promotion_approve(promotion=promotion, actor=users["approver"])
        assert Promotion.objects.get(pk=promotion.pk).state != PromotionState.REQUESTED


def test_the_api_overrides_the_checklist_for_an_approver_not_the_requester(
    client, sandbox, users, purge_broker
):
    """POST /api/v1/promotions/{id}/checklist-override: the JSON twin of the page's override."""
    from accounts.services import api_token_create

    app = promotable_app(sandbox)
    _drop_readiness_probe(sandbox, app)
    promotion = services.promotion_request_create(
        actor=users["rm_approver"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    url = f"/api/v1/promotions/{promotion.pk}/checklist-override"

    def post(user, body, **headers):
        _token, raw = api_token_create(user=user, name=f"t-{user.username}-{time.monotonic_ns()}")
        return client.post(
            url,
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
            **headers,
        )

    reason = "probe lands in the next release; traffic is drained by hand"
    # The requester, although an approver, cannot override their own promotion (four eyes).
    denied = post(users["rm_approver"], {"reason": reason})
    assert denied.status_code == 403 and "four-eyes" in denied.json()["error"]
    # Without the approver role: 403 before anything is read.
    assert post(users["rm"], {"reason": reason}).status_code == 403
    # The reason is required, and must say something.
    for body in ({}, {"reason": ""}, {"reason": "   ok    "}, {"reason": 42}):
        refused = post(users["approver"], body)
        assert refused.status_code == 400, (body, refused.content)
        assert refused.json()["error"].startswith("reason:")
    assert not AuditEvent.objects.filter(action="promotion.checklist_overridden").exists()

    done = post(users["approver"], {"reason": reason})
    assert done.status_code == 200, done.content
    gate = _gate(done.json()["gates"], "checklist.readiness_probe")
    assert gate["overridden"] == reason and done.json()["state"] == S.REQUESTED  # approving is separate
    promotion.refresh_from_db()
    assert promotion.checklist_overridden_by_name == "alex" and promotion.checklist_override_reason == reason
    event = AuditEvent.objects.get(action="promotion.checklist_overridden", target_id=str(promotion.pk))
    assert event.actor_name == "alex" and event.after["reason"] == reason
    assert event.after["gates"][0]["name"] == "checklist.readiness_probe"
    # Nothing left to override: 409 with the service's reason.
    again = post(users["approver2"], {"reason": reason})
    assert again.status_code == 409 and "no blocking" in again.json()["error"]
    # A browser session without a CSRF token is refused; the bearer token needs none.
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["approver2"])
    csrf = browser.post(url, json.dumps({"reason": reason}), content_type="application/json")
    assert csrf.status_code == 403 and "CSRF" in csrf.json()["error"]
    # The OpenAPI document describes it.
    client.force_login(users["viewer"])
    schema = client.get("/api/schema").json()
    operation = schema["paths"]["/promotions/{id}/checklist-override"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["required"] == ["reason"]
