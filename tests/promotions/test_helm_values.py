"""A Helm-values app promoted stage → prod end to end, against the sandbox's multi-source apps.

Request (the values file edited round-trip), the branch pushed, Argo CD's rendering of the chart
with the values at the branch's head (`revisions` + `sourcePositions`), the checklist and the
secret scan on those rendered objects, approval, PR, merge, prod running the new tag. Before the
portal read multi-source apps, the request was refused: "Something to promote:
environments/prod/<app>/kustomization.yaml does not exist on the target branch", and the checklist
read "environments/prod/<app>/kustomization.yaml not found".
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from inventory.models import Application
from promotions import observed, services
from promotions.models import Promotion, PromotionState
from tests.conftest import wait_for
from tests.promotions.helpers import make_sandbox
from tests.sandbox_fixtures import commit_files

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def helm_box(db, tmp_path, settings):
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    box = make_sandbox(tmp_path, helm_apps=1)
    yield box
    box.argo.stop()
    box.forge.stop()


def _helm_app(box) -> Application:
    spec = next(a for a in box.generated.apps if a.source == "helm")
    app = Application.objects.get(name=spec.name)
    if observed.env_state(app, box.stage).images == observed.env_state(app, box.prod).images:
        pytest.skip("the generated Helm app runs the same version in stage and prod")
    return app


def _gate(gates, name):
    return next(g for g in gates if (g["name"] if isinstance(g, dict) else g.name) == name)


def test_the_preview_says_the_chart_is_checked_once_the_request_pushes_the_branch(client, helm_box, users):
    """Before the request nothing is rendered: the checklist is pending, not a gate to override."""
    app = _helm_app(helm_box)
    client.force_login(users["rm"])
    html = client.get("/promotions/new/", {"app": app.name, "from": "stage", "to": "prod"}).content.decode()
    assert "checked on Argo CD&#x27;s rendering once the request pushes the branch" in html
    assert "cannot be approved until" not in html and "overrides them" not in html
    assert (
        "Request promotion" in html
        and "disabled" not in html.split("Request promotion")[0].rsplit("<button", 1)[1]
    )
    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=helm_box.stage, target_env=helm_box.prod
    )
    (waiting,) = [gate for gate in preview.all_gates if gate.name == "checklist.unavailable"]
    assert not waiting.passed and waiting.blocking  # never passes unchecked
    assert waiting.awaits_render and waiting.status == "pending"
    assert preview.awaiting_render == [waiting] and not preview.ok


def test_a_helm_values_app_promotes_stage_to_prod_through_its_rendered_diff(
    client, helm_box, users, purge_broker
):
    box = helm_box
    app = _helm_app(box)
    assert app.strategy == "helm-values"  # read from its Argo CD app by the poller, not configured
    stage_tag = observed.env_state(app, box.stage).images[0].rsplit(":", 1)[-1]
    prod_tag = observed.env_state(app, box.prod).images[0].rsplit(":", 1)[-1]
    values_path = f"environments/prod/{app.name}/values.yaml"
    before = box.file("main", values_path)

    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=box.stage, target_env=box.prod
    )
    assert promotion.state == PromotionState.REQUESTED
    item = promotion.items.get()
    assert (item.version_before, item.version_after) == (f"image.tag={prod_tag}", f"image.tag={stage_tag}")
    # No overlay to read for a chart: the checklist waits for Argo CD's rendering of the pushed branch.
    waiting = _gate(promotion.gates, "checklist.unavailable")
    assert "checked on Argo CD's rendering once the request pushes the branch" in waiting["detail"]
    assert "not found" not in waiting["detail"]

    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    # Argo CD rendered the chart at the pushed head (values source at the head, chart at the head).
    rendered = services.promotion_rendered(promotion, branch_ok=True)
    (change,) = rendered
    assert change.ok and change.after_revision == promotion.pushed_head_sha
    changed = [c for c in change.diff.changes if c.change == "changed"]
    assert [c.id.kind for c in changed] == ["Deployment"]
    assert f"-        image: registry.example.com/acme/{app.name}:{prod_tag}" in changed[0].diff
    assert f"+        image: registry.example.com/acme/{app.name}:{stage_tag}" in changed[0].diff
    # The checklist and the secret scan ran on the rendered objects.
    checklist = _gate(promotion.gates, "checklist.all")
    assert (
        checklist["passed"]
        and f"rendered by Argo CD at {promotion.pushed_head_sha[:8]}" in checklist["detail"]
    )
    assert _gate(promotion.gates, "secret_scan")["passed"]
    assert _gate(promotion.gates, "rendered")["passed"]

    client.force_login(users["approver"])
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-object-change="changed"' in html and "<code>Deployment.apps " in html

    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ship it")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    (pull,) = box.pulls()
    assert "### Rendered by Argo CD" in pull["body"] and "- changed: `Deployment.apps " in pull["body"]
    diff = box.pr_diff(promotion.pr_number)
    lines = [x for x in diff.splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    # ruamel.yaml round-trip: only the tag's line changes, quoting and comments kept.
    assert lines == [f'-  tag: "{prod_tag}"', f'+  tag: "{stage_tag}"']

    box.merge(promotion.pr_number)
    after = box.file("main", values_path)
    assert after == before.replace(f'tag: "{prod_tag}"', f'tag: "{stage_tag}"')

    def healthy():
        box.reconcile()
        box.poll()
        return services.promotion_track(promotion_id=promotion.pk) == "healthy"

    wait_for(healthy, timeout=40, interval=0.5, message="promotion healthy")
    assert observed.env_state(app, box.prod).images[0].endswith(f":{stage_tag}")
    actions = list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions[:4] == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approved",
        "promotion.pr_opened",
    ]
    assert actions[-1] == "promotion.healthy"
    assert not Promotion.objects.get(pk=promotion.pk).items.filter(active=True).exists()


def test_a_helm_values_app_rolls_back_by_reverting_its_values_file(helm_box, users, purge_broker):
    from rollbacks import services as rollbacks
    from tests.factories import UserFactory

    box = helm_box
    app = _helm_app(box)
    prod_tag = observed.env_state(app, box.prod).images[0].rsplit(":", 1)[-1]
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=box.stage, target_env=box.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    box.merge(promotion.pr_number)

    def healthy():
        box.reconcile()
        box.poll()
        return services.promotion_track(promotion_id=promotion.pk) == "healthy"

    wait_for(healthy, timeout=40, interval=0.5, message="promotion healthy")
    oncall = UserFactory(username="olga", roles=["oncall"])
    rollback = rollbacks.rollback_request_create(
        actor=oncall, application=app, environment=box.prod, mode="previous", reason="5xx", incident="INC-1"
    )
    checklist = _gate(rollback.gates, "checklist.unavailable")
    assert "see Argo CD's rendered diff of the revert" in checklist["detail"] and not checklist["blocking"]
    rollbacks.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    diff = box.pr_diff(rollback.pr_number)
    lines = [x for x in diff.splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))]
    assert lines[-1] == f'+  tag: "{prod_tag}"' and len(lines) == 2
    (change,) = rollbacks.rollback_rendered(rollback)
    assert change.ok and [c.id.kind for c in change.diff.changes] == ["Deployment"]
    assert f"+        image: registry.example.com/acme/{app.name}:{prod_tag}" in change.diff.changes[0].diff


def test_a_chart_that_drops_the_readiness_probe_fails_the_checklist_on_argo_cds_rendering(
    helm_box, users, purge_broker
):
    """The failing manifest is Helm-rendered: the chart's template loses its probe."""
    box = helm_box
    app = _helm_app(box)
    path = f"apps/{app.name}/chart/templates/deployment.yaml"
    lines = box.file("main", path).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "readinessProbe:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    commit_files(box.bare, {path: "".join(lines[:start] + lines[end:])}, f"{app.name}: chart without probe")

    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=box.stage, target_env=box.prod
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    probe = _gate(promotion.gates, "checklist.readiness_probe")
    assert not probe["passed"] and probe["blocking"] and probe["overridable"]
    assert "rendered by Argo CD at" in probe["detail"]
    assert probe["findings"][0]["target"].startswith("Deployment")
    with pytest.raises(services.PromotionRefused, match="zero-downtime checklist"):
        services.promotion_approve(promotion=promotion, actor=users["approver"])
