"""Audit as a sink: the action enumeration, the project/environment columns, scoping by them."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import RoleGrant
from accounts.roles import Role
from audit.actions import AuditAction
from audit.models import AuditEvent
from audit.services import audit_event_record, change_record_sync
from audit.verify import audit_chain_verify
from promotions.services import promotion_block_create
from tests.factories import ApplicationFactory, EnvironmentFactory, UserFactory
from tests.insight.builders import DeploymentFactory, PromotionItemFactory, RollbackFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_PACKAGES = ("accounts", "audit", "core", "gitopsportal", "insight", "integrations", "inventory",
                       "promotions", "rollbacks")  # fmt: skip
NAMESPACES = {value.split(".")[0] for value in AuditAction.values}


# --- the enumeration ------------------------------------------------------------------------------


def test_an_unknown_action_is_refused_and_nothing_is_written():
    with pytest.raises(ValueError, match=r"unknown action 'promotion\.teleported'"):
        audit_event_record(action="promotion.teleported", message="x")
    assert not AuditEvent.objects.exists()


def test_a_known_action_is_accepted_as_the_member_or_its_string():
    first = audit_event_record(action=AuditAction.PROMOTION_MERGED)
    second = audit_event_record(action="promotion.merged")
    assert first.action == second.action == "promotion.merged"
    assert AuditEvent.objects.filter(action=AuditAction.PROMOTION_MERGED).count() == 2


def _action_literals() -> set[tuple[str, str]]:
    """Return (string, where) for each action-looking literal in the production code.

    Taken: every string literal passed as ``action=`` (argparse's ``add_argument`` aside), and
    every literal shaped ``<namespace>.<verb>`` where the namespace is one the enumeration uses
    (module paths and other keywords' values aside).
    Dynamic names (``f"rollback.{action}"``) are covered by their literal parts (``"merged"``
    passed as ``action=`` must exist as ``<namespace>.merged``) and, at run time, by
    audit_event_record refusing any unknown action in every test that writes one.
    """
    found = set()
    for package in PRODUCTION_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            # Values of other keywords (dispatch_uid=, name=) are not actions.
            other_keywords = {
                id(k.value)
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                for k in n.keywords
                if k.arg != "action"
            }
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Call):
                    if isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                        continue
                    for keyword in node.keywords:
                        if keyword.arg != "action":
                            continue
                        values = [keyword.value]
                        if isinstance(keyword.value, ast.IfExp):
                            values = [keyword.value.body, keyword.value.orelse]
                        for value in values:
                            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                                found.add((value.value, where))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    namespace, dot, verb = node.value.partition(".")
                    shaped = (
                        dot and namespace in NAMESPACES and verb.replace("_", "").isalpha() and verb.islower()
                    )
                    if not shaped or id(node) in other_keywords:
                        continue
                    if not (ROOT / namespace / f"{verb}.py").exists():  # "audit.urls" is a module
                        found.add((node.value, where))
    return found


def test_every_action_string_in_the_code_is_an_audit_action():
    literals = _action_literals()
    values = set(AuditAction.values)
    suffixes = {value.split(".", 1)[1] for value in values}
    assert {"promotion.requested", "auth.login", "deployment.observed"} <= {s for s, _ in literals}
    unknown = sorted(
        f"{where}: {text!r}" for text, where in literals if text not in values and text not in suffixes
    )
    assert unknown == []


def test_docs_list_every_action():
    text = (ROOT / "docs" / "audit.md").read_text()
    assert [value for value in AuditAction.values if f"`{value}`" not in text] == []


# --- the project and environment columns ------------------------------------------------------------


def test_a_promotion_event_takes_project_and_environment_from_its_target():
    item = PromotionItemFactory(application=ApplicationFactory(name="pay-api", project="payments"))
    PromotionItemFactory(promotion=item.promotion, application=ApplicationFactory(name="web", project="shop"))
    # As promotions write it: the target named by type and id, the environment given.
    event = audit_event_record(
        action="promotion.requested", target_type="promotion", target_id=item.promotion.pk, app="pay-api,web"
    )
    assert (event.project, event.environment) == ("payments,shop", "prod")
    assert AuditEvent.objects.filter(project="payments,shop", environment="prod").count() == 1


def test_a_rollback_event_takes_project_and_environment_from_the_target_object():
    rollback = RollbackFactory(
        application=ApplicationFactory(name="pay-api", project="payments"),
        environment=EnvironmentFactory(name="prod"),
    )
    event = audit_event_record(action="rollback.requested", target=rollback, target_type="rollback")
    assert (event.project, event.environment) == ("payments", "prod")


def test_a_deployment_event_keeps_the_given_environment_and_derives_the_project():
    deployment = DeploymentFactory(
        argo_app__application=ApplicationFactory(name="pay-api", project="payments")
    )
    event = audit_event_record(
        action="deployment.observed", target_type="deployment", target_id=deployment.pk, environment=""
    )
    assert (event.project, event.environment) == ("payments", "")


def test_given_project_and_environment_win_and_untyped_targets_stay_blank():
    event = audit_event_record(action="auth.login", target_type="user", target_id=7)
    assert (event.project, event.environment) == ("", "")
    given = audit_event_record(action="inventory.config_applied", project="ops", environment="dev")
    assert (given.project, given.environment) == ("ops", "dev")


def test_the_promotion_block_service_writes_its_project(db):
    app = ApplicationFactory(name="pay-api", project="payments")
    block = promotion_block_create(
        application=app, environment=EnvironmentFactory(name="prod"), blocked_version="1.2.3"
    )
    event = AuditEvent.objects.get(action="promotion.block_created", target_id=str(block.pk))
    assert (event.project, event.environment, event.app) == ("payments", "prod", "pay-api")


def test_project_is_not_hashed_so_the_chain_verifies():
    audit_event_record(action="promotion.merged", project="payments", environment="prod")
    audit_event_record(action="promotion.merged", project="search", environment="prod")
    assert audit_chain_verify().ok


def test_the_backfill_fills_project_from_apps_and_keeps_the_chain_and_the_trigger():
    backfill = importlib.import_module("audit.migrations.0007_backfill_event_project").backfill
    ApplicationFactory(name="pay-api", project="payments")
    ApplicationFactory(name="web", project="shop")
    single = audit_event_record(action="promotion.merged", app="pay-api", environment="prod")
    train = audit_event_record(action="promotion.merged", app="web,pay-api", environment="prod")
    unknown = audit_event_record(action="promotion.merged", app="gone", environment="prod")
    sign_in = audit_event_record(action="auth.login")
    with connection.schema_editor() as editor:
        backfill(django_apps, editor)
    projects = dict(AuditEvent.objects.values_list("sequence", "project"))
    assert projects == {single.sequence: "payments", train.sequence: "payments,shop",
                        unknown.sequence: "", sign_in.sequence: ""}  # fmt: skip
    assert audit_chain_verify().ok
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=single.sequence).update(project="other")


# --- scoping by the columns -----------------------------------------------------------------------


def _auditor(client, *, project: str = "*", environment: str = "*"):
    user = UserFactory(username=f"auditor-{project}-{environment}".replace("*", "all"))
    RoleGrant.objects.create(user=user, role=Role.AUDITOR, project=project, environment=environment)
    client.force_login(user)
    return user


def _event_list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("audit:event_list")).status_code == 200
    return len(queries)


def test_the_scoped_event_list_costs_the_same_queries_however_many_applications(client):
    _auditor(client, project="payments")
    for i in range(3):
        audit_event_record(action="promotion.merged", app=f"a{i}", project="payments", message=f"m{i}")
    ApplicationFactory(name="pay-api", project="payments")
    few = _event_list_queries(client)
    for i in range(40):
        ApplicationFactory(name=f"app-{i}", project="payments" if i % 2 else "search")
    assert _event_list_queries(client) == few


def test_an_environment_scoped_auditor_sees_only_that_environment(client):
    _auditor(client, environment="stage")
    audit_event_record(
        action="promotion.merged", project="payments", environment="stage", message="stage-event"
    )
    audit_event_record(
        action="promotion.merged", project="payments", environment="prod", message="prod-event"
    )
    audit_event_record(action="auth.login", message="login-event")
    body = client.get(reverse("audit:event_list")).content.decode()
    assert "stage-event" in body and "prod-event" not in body and "login-event" not in body
    api = client.get("/api/v1/audit/events").json()
    # The auditor's own grant (role.granted, environment stage) is in scope too.
    assert [e["message"] for e in api["events"] if e["action"] == "promotion.merged"] == ["stage-event"]
    export = client.post(reverse("audit:export", args=["jsonl"]))
    lines = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert [line["message"] for line in lines if line["action"] == "promotion.merged"] == ["stage-event"]
    prod = AuditEvent.objects.get(message="prod-event")
    assert client.get(reverse("audit:event_detail", args=[prod.sequence])).status_code == 404


def test_a_project_and_environment_grant_needs_both(client):
    _auditor(client, project="pay*", environment="prod")
    for project, env in (
        ("payments", "prod"),
        ("payments", "stage"),
        ("search", "prod"),
        ("shop,payments", "prod"),
    ):
        audit_event_record(
            action="promotion.merged", project=project, environment=env, message=f"{project}@{env}"
        )
    api = client.get("/api/v1/audit/events").json()
    assert sorted(e["message"] for e in api["events"]) == ["payments@prod", "shop,payments@prod"]


def test_an_environment_scoped_auditor_sees_only_that_environments_change_records(client):
    _auditor(client, environment="stage")
    for env in ("stage", "prod"):
        change_record_sync(kind="promotion", source_type="promotion", source_id=f"1:{env}", app="pay-api",
                           environment=env, project="payments", title=f"{env}-change")  # fmt: skip
    api = client.get("/api/v1/audit/changes").json()
    assert [c["title"] for c in api["changes"]] == ["stage-change"]
    assert "prod-change" not in client.get(reverse("audit:change_list")).content.decode()
