"""The rendered diff on promotion pages, from the sandbox Argo CD: kustomize and Helm-values apps."""

from __future__ import annotations

import subprocess

import pytest
from django.utils import timezone

from inventory.models import Application
from promotions import gitops, observed, pullrequests, services
from promotions.models import Promotion
from tests.promotions.helpers import make_sandbox, promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def _requested_and_pushed(sandbox, users, app) -> Promotion:
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"  # at the request
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ok")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pushed_head_sha or promotion.pr_head_sha
    return promotion


def test_detail_page_lazy_loads_the_rendered_diff_of_a_new_tag(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    promotion = _requested_and_pushed(sandbox, users, app)
    client.force_login(users["viewer"])
    page = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert f'hx-get="/promotions/{promotion.pk}/rendered/"' in page
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    print(html)
    assert "<html" not in html
    assert "Rendered by Argo CD" in html and "data-render-error" not in html
    assert 'data-object-change="changed"' in html
    item = promotion.items.get()
    new_tag = item.version_after.rsplit(":", 1)[-1].rsplit("@", 1)[-1]
    assert f'<span class="add">+        image: registry.example.com/acme/{app.name}' in html
    assert new_tag in html
    assert "<code>Deployment.apps " in html
    assert "data-sync-order" in html
    # Both sides are commits: the rendering is kept, a page opened again does not ask Argo CD.
    sandbox.argo_fault(error_rate=1.0, status=500, paths=["/api/v1/applications/*/manifests"])
    again = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-object-change="changed"' in again and "data-render-error" not in again


@pytest.fixture
def helm_sandbox(db, tmp_path, settings):
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    box = make_sandbox(tmp_path, helm_apps=1)
    yield box
    box.argo.stop()
    box.forge.stop()


def test_detail_page_shows_the_rendered_diff_of_a_helm_values_app(client, helm_sandbox, users, purge_broker):
    spec = next(a for a in helm_sandbox.generated.apps if a.source == "helm")
    app = Application.objects.get(name=spec.name)
    assert app.strategy == "helm-values"  # the poller read it from the multi-source Argo CD app
    stage = observed.env_state(app, helm_sandbox.stage)
    prod = observed.env_state(app, helm_sandbox.prod)
    if stage.images == prod.images:
        pytest.skip("the generated Helm app runs the same version in stage and prod")
    promotion = _requested_and_pushed(helm_sandbox, users, app)
    client.force_login(users["approver2"])
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    print(html)
    assert "data-render-error" not in html and 'data-object-change="changed"' in html
    assert "<code>Deployment.apps " in html
    new_tag = stage.images[0].rsplit(":", 1)[-1]
    assert f'<span class="add">+        image: registry.example.com/acme/{app.name}:{new_tag}</span>' in html
    # The chart's ConfigMap runs in wave -1, before the Deployment.
    order = html[html.index("data-sync-order") :]
    assert order.index("wave -1") < order.index("<code>ConfigMap ") < order.index("<code>Deployment.apps ")


def _broken_commit(sandbox, app: Application, tmp_path) -> str:
    """A commit on a side branch whose prod overlay Argo CD cannot build (a missing resource)."""
    work = tmp_path / "broken"
    subprocess.run(["git", "clone", "-q", str(sandbox.bare), str(work)], check=True)
    path = work / f"environments/prod/{app.name}/kustomization.yaml"
    path.write_text(path.read_text().replace("resources:\n", "resources:\n  - missing.yaml\n", 1))
    run = lambda *a: subprocess.run(a, cwd=work, check=True, capture_output=True, text=True).stdout  # noqa: E731
    run("git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "Break the overlay")
    run("git", "push", "-q", "origin", "HEAD:refs/heads/broken")
    return run("git", "rev-parse", "HEAD").strip()


def test_a_render_failure_is_a_blocking_gate_with_argocds_message(client, sandbox, users, tmp_path):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    client.force_login(users["approver"])
    pending = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert "Rendered after the branch is pushed." in pending and "data-render-error" not in pending

    broken = _broken_commit(sandbox, app, tmp_path)
    # As if the portal had pushed its branch there: approvals check the forge's head of that branch.
    Promotion.objects.filter(pk=promotion.pk).update(
        pr_branch="broken", pushed_head_sha=broken, branch_pushed_at=timezone.now()
    )
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert '<span class="badge badge-bad">fail</span> <strong>Rendered by Argo CD</strong>' in html
    assert "data-render-error" in html and "Manifest generation error" in html and "missing.yaml" in html
    assert 'data-object-change="' not in html  # not an empty diff: no diff at all

    # The approver cannot approve it: the gates are evaluated on that head first, Argo CD's message says why.
    with pytest.raises(services.PromotionRefused, match="cannot be approved: Rendered by Argo CD") as refused:
        services.promotion_approve(promotion=Promotion.objects.get(pk=promotion.pk), actor=users["approver"])
    assert "missing.yaml" in refused.value.message
    assert not Promotion.objects.get(pk=promotion.pk).approvals.exists()
    # At PR time the same failure stops the promotion (say it was approved before the head broke).
    Promotion.objects.filter(pk=promotion.pk).update(state="approved", approved_at=timezone.now())
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    assert promotion.state == "failed"
    assert "Rendered by Argo CD" in promotion.failure_reason and "missing.yaml" in promotion.failure_reason
    gate = next(g for g in promotion.gates if g["name"] == "rendered")
    assert gate["blocking"] and not gate["passed"]
    assert not sandbox.pulls()


def test_pr_body_summarises_the_rendered_diff_once_the_branch_is_pushed(sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    promotion = _requested_and_pushed(sandbox, users, app)
    (pull,) = sandbox.pulls()
    # The branch was pushed at the request: the first body already summarises its rendered diff.
    assert (
        "### Rendered by Argo CD" in pull["body"] and f"/promotions/{promotion.pk}/#rendered" in pull["body"]
    )
    assert "- changed: `Deployment.apps " in pull["body"]
    items = list(promotion.items.select_related("application"))
    body = pullrequests._pr_body(
        promotion,
        items,
        gitops.mirror_for(promotion.repository),
        ["alex"],
        services.promotion_rendered(promotion, branch_ok=False),
    )
    section = body[body.index("### Rendered by Argo CD") :]
    print(section)
    assert "0 added, 0 removed, 2 changed" in section or "0 added, 0 removed, 1 changed" in section
    assert "- changed: `Deployment.apps " in section and "Deployment ~1" in section
    assert "http://" in section and f"/promotions/{promotion.pk}/#rendered" in section
    assert len(body) <= 60_000


def test_a_copy_paths_app_shows_its_rendered_diff(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    app.strategy = "copy-paths"
    app.strategy_options = {"paths": ["kustomization.yaml"]}
    app.save()
    promotion = _requested_and_pushed(sandbox, users, app)
    client.force_login(users["viewer"])
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    print(html)
    assert "data-render-error" not in html and 'data-object-change="changed"' in html
    # The copied overlay pins stage's image: the Deployment's rendered image changes in prod.
    new = f'<span class="add">+        image: registry.example.com/acme/{app.name}'
    assert new in html and "<code>Deployment.apps " in html


def test_argo_cd_down_at_the_push_holds_the_approval_until_it_renders(client, sandbox, users, purge_broker):
    """No approval without a rendered diff: a transient failure is asked again when the approver approves."""
    from promotions.models import Approval

    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    sandbox.argo_fault(error_rate=1.0, status=503, paths=["/api/v1/applications/*/manifests"])
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    gate = next(g for g in promotion.gates if g["name"] == "rendered")
    assert not gate["passed"] and gate["blocking"] and gate["transient"]
    assert "Argo CD cannot render" in gate["detail"]

    with pytest.raises(services.PromotionRetryLater, match="Argo CD cannot render") as held:
        services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ok")
    assert "nothing was recorded" in held.value.message.lower()
    assert not Approval.objects.filter(promotion=promotion).exists()
    assert Promotion.objects.get(pk=promotion.pk).state == "requested"
    client.force_login(users["approver"])
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    assert "data-render-error" in html and "try again later" in html

    sandbox.argo_fault(error_rate=0.0)  # Argo CD answers again
    services.promotion_approve(promotion=Promotion.objects.get(pk=promotion.pk), actor=users["approver"])
    promotion.refresh_from_db()
    assert promotion.state == "approved"
    gate = next(g for g in promotion.gates if g["name"] == "rendered")
    assert gate["passed"] and "object change" in gate["detail"]


def test_the_pr_body_of_a_huge_rendered_diff_fits_the_forge_it_goes_to(sandbox, users, purge_broker):
    from tests.changes.test_rendered import _huge

    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    items = list(promotion.items.select_related("application"))
    mirror = gitops.mirror_for(promotion.repository)
    github = pullrequests._pr_body(promotion, items, mirror, ["alex"], _huge())
    assert len(github) <= 65_536 and "truncated: the full rendered diff is on the portal page" in github
    assert f"/promotions/{promotion.pk}/#rendered" in github and "### Changelog" in github
    promotion.repository.forge_kind = "gitlab"
    gitlab = pullrequests._pr_body(promotion, items, mirror, ["alex"], _huge())
    assert 65_536 < len(gitlab) <= 1_000_000
