"""Who owns an application: an Argo CD app joins a portal app only from its pinned Argo CD projects.

Issue 15, "Who owns an application": a team that may create Argo CD apps in its own project
labels one with another team's app name; the portal must not merge it into that app.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import RoleGrant
from audit.models import AuditEvent
from inventory.config import ApplicationConfig, OwnershipRule, parse_config
from inventory.configapply import config_apply
from inventory.configreader import ConfigError
from inventory.models import Application, ArgoApplication
from sandbox.argocd.model import ClusterDef
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db


def _rogue(argocd, *, like: str, app: str, project: str, cluster: str = "stage-zz-rogue-1") -> str:
    """Add to the emulator an Argo CD app in `project` labelled `app`, cloned from the app `like`."""
    with argocd.lock:
        state = argocd.apps[like]
        d = state.definition
        rogue_cluster = ClusterDef(cluster, d.cluster.server, dict(d.cluster.labels))
        definition = dataclasses.replace(d, app=app, team=project, cluster=rogue_cluster)
        argocd.apps[definition.name] = dataclasses.replace(
            state, definition=definition, history=list(state.history), _cache=None
        )
    return definition.name


def _stage_app(argocd, app: str) -> str:
    return next(n for n, s in argocd.apps.items() if s.definition.app == app and s.definition.env == "stage")


def _conflict_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="inventory.ownership_conflict").order_by("pk"))


def _metric(client, settings) -> float:
    settings.METRICS_TOKEN = "metrics-token-ownership"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-ownership")
    samples = [
        s
        for f in text_string_to_metric_families(response.content.decode())
        for s in f.samples
        if s.name == "gitopsportal_application_ownership_conflicts"
    ]
    return sum(s.value for s in samples)


def test_an_app_from_another_argo_cd_project_is_a_conflict_not_a_merge(sandbox_inventory, client, settings):
    ledger = Application.objects.get(name="ledger")
    assert ledger.project == "payments" and ledger.argocd_projects == ["payments"]
    genuine = _stage_app(sandbox_inventory.argocd, "ledger")
    rogue = _rogue(
        sandbox_inventory.argocd,
        like=_stage_app(sandbox_inventory.argocd, "ledger"),
        app="ledger",
        project="checkout",
    )

    result = sandbox_inventory.poll()
    assert result.ok, result.error

    row = ArgoApplication.objects.get(name=rogue)
    assert row.application is None and row.claimed_app == "ledger" and row.project == "checkout"
    assert "checkout" in row.ownership_conflict
    assert ArgoApplication.objects.get(name=genuine).application == ledger
    assert not ledger.deployments.filter(argo_app=row).exists()
    [event] = _conflict_events()
    assert event.project == "payments" and event.after["argocd_project"] == "checkout"

    # Audited once: the next change to the rogue app is stored, not audited again.
    sandbox_inventory.argocd.apps[rogue].health = "Degraded"
    sandbox_inventory.argocd.apps[rogue]._cache = None
    sandbox_inventory.poll()
    assert len(_conflict_events()) == 1

    admin = user_with_role("admin", username="owner-admin")
    client.force_login(admin)
    html = client.get(reverse("inventory:app", args=["ledger"])).content.decode()
    assert "Ownership conflicts" in html and rogue in html
    assert _metric(client, settings) == 1


def test_a_new_name_claimed_first_from_another_project_follows_the_glob_pin(sandbox_inventory, client):
    config = dataclasses.replace(
        sandbox_inventory.config,
        ownership=(OwnershipRule(apps="ledger-*", argocd_projects=("payments",)),),
    )
    config_apply(config=config)
    rogue = _rogue(
        sandbox_inventory.argocd,
        like=_stage_app(sandbox_inventory.argocd, "ledger"),
        app="ledger-v2",
        project="checkout",
    )
    assert sandbox_inventory.poll().ok

    claimed = Application.objects.get(name="ledger-v2")
    assert claimed.project == "payments" and claimed.pin_source == "glob"
    row = ArgoApplication.objects.get(name=rogue)
    assert row.application is None and row.ownership_conflict
    assert len(_conflict_events()) == 1


def test_moving_an_app_to_another_argo_cd_project_moves_its_rights(sandbox_inventory, client):
    genuine = _stage_app(sandbox_inventory.argocd, "ledger")
    moved = _rogue(
        sandbox_inventory.argocd,
        like=_stage_app(sandbox_inventory.argocd, "ledger"),
        app="ledger",
        project="checkout",
    )
    assert sandbox_inventory.poll().ok
    payments_user = user_with_role("viewer", username="payments-viewer")
    payments_user.groups.clear()
    RoleGrant.objects.create(user=payments_user, role="viewer", project="payments")
    checkout_user = user_with_role("viewer", username="checkout-viewer")
    checkout_user.groups.clear()
    RoleGrant.objects.create(user=checkout_user, role="viewer", project="checkout")
    url = reverse("inventory:app", args=["ledger"])
    client.force_login(checkout_user)
    assert client.get(url).status_code == 403

    config = dataclasses.replace(
        sandbox_inventory.config,
        applications=(ApplicationConfig(name="ledger", argocd_projects=("checkout",)),),
    )
    config_apply(config=config)

    ledger = Application.objects.get(name="ledger")
    assert ledger.project == "checkout" and ledger.pin_source == "config"
    assert ArgoApplication.objects.get(name=moved).application == ledger
    assert ArgoApplication.objects.get(name=genuine).application is None
    assert client.get(url).status_code == 200
    client.force_login(payments_user)
    assert client.get(url).status_code == 403
    assert {e.after["argocd_project"] for e in _conflict_events()} >= {"payments"}


def test_an_ownership_pin_in_the_config_names_its_line():
    text = (
        "argocd:\n  - name: a\n    url: https://argocd.example\n    token: t\nownership:\n  - apps: 'pay-*'\n"
    )
    with pytest.raises(ConfigError, match=r"line 6.*argocd_projects"):
        parse_config(text, "portal.yaml")
    ok = parse_config(text.replace("'pay-*'\n", "'pay-*'\n    argocd_projects: [payments]\n"), "portal.yaml")
    assert ok.ownership == (OwnershipRule(apps="pay-*", argocd_projects=("payments",)),)


def test_a_pin_to_an_unknown_instance_is_a_config_error():
    text = (
        "argocd:\n  - name: a\n    url: https://argocd.example\n    token: t\n"
        "ownership:\n  - apps: 'pay-*'\n    argocd_projects: [payments]\n    argocd_instances: [b]\n"
    )
    with pytest.raises(ConfigError, match="unknown Argo CD instance"):
        parse_config(text, "portal.yaml")
