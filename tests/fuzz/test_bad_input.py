"""Malformed input from every neighbour: a clear error naming the problem, and no partial write.

Config files (the operator), webhook bodies (the forge) and Argo CD responses (through a proxy that
rewrites the real emulator's answers): truncated JSON or YAML, wrong types, unknown enum values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from inventory.config import load_config
from inventory.configreader import ConfigError
from inventory.models import ArgoApplication, ArgoInstance, Cluster, Deployment, Environment, GitRepository
from tests.sandbox_fixtures import ARGOCD_TOKEN, SANDBOX_CONFIG

pytestmark = pytest.mark.django_db

# -- configuration files --------------------------------------------------------------------------

SANDBOX_TEXT = SANDBOX_CONFIG.read_text()
BROKEN_CONFIGS = {
    # name: (transformation of config/sandbox.yaml, key named in the error, line of the problem or None)
    "truncated-yaml": (
        lambda t: t[: t.index("environments:")] + "environments:\n  - name: dev\n    branch: [main\n",
        None,
    ),
    "wrong-type": (
        lambda t: t.replace("approvals_required: 1", "approvals_required: many"),
        "approvals_required",
    ),
    "list-expected": (
        lambda t: t.replace("environments:\n  - name: dev", "environments: dev\nx_old:\n  - name: dev"),
        "environments",
    ),
    "unknown-enum": (lambda t: t.replace("forge: github", "forge: bitbucket"), "forge"),
    "unknown-key": (
        lambda t: t.replace("requires_approval: true", "requires_aproval: true"),
        "requires_aproval",
    ),
    "http-without-allow-http": (lambda t: t.replace("    allow_http: true\n", "", 1), "url"),
}


def _snapshot() -> dict[str, list]:
    return {
        "instances": list(ArgoInstance.objects.order_by("pk").values_list("name", "url")),
        "repositories": list(GitRepository.objects.order_by("pk").values_list("name", "url", "forge_kind")),
        "environments": list(
            Environment.objects.order_by("pk").values_list("name", "requires_approval", "approvals_required")
        ),
    }


@pytest.fixture
def applied_config(db):
    """config/sandbox.yaml applied (default ports: no emulator is contacted)."""
    from inventory.configapply import config_apply

    config_apply(config=load_config(str(SANDBOX_CONFIG)))


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_a_broken_config_file_is_refused_with_one_clear_line_and_nothing_applied(
    applied_config, tmp_path: Path, case: str
):
    transform, key = BROKEN_CONFIGS[case]
    text = transform(SANDBOX_TEXT)
    assert text != SANDBOX_TEXT
    path = tmp_path / "portal.yaml"
    path.write_text(text)
    before = _snapshot()
    assert before["environments"], "the valid configuration was not applied"

    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(str(path)), message
    assert " line " in message, message
    if key:
        assert key in message, message

    # The command an operator runs reports the same line and changes nothing.
    with pytest.raises((CommandError, ConfigError)) as command_error:
        call_command("poll", "--once", "--config", str(path))
    assert str(path) in str(command_error.value)
    assert _snapshot() == before


def test_a_missing_environment_variable_in_the_config_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("E2E_UNSET_TOKEN", raising=False)
    path = tmp_path / "portal.yaml"
    path.write_text(
        SANDBOX_TEXT.replace("${SANDBOX_ARGOCD_TOKEN:-sandbox-argocd-token}", "${E2E_UNSET_TOKEN}")
    )
    with pytest.raises(ConfigError, match="E2E_UNSET_TOKEN"):
        load_config(str(path))


# -- webhook bodies -------------------------------------------------------------------------------

WEBHOOK_SECRET = "fuzz-webhook-secret"


def _pr_event(**overrides) -> dict:
    event = {
        "action": "closed",
        "number": 7,
        "pull_request": {
            "number": 7,
            "state": "closed",
            "merged": True,
            "merge_commit_sha": "a" * 40,
            "head": {"ref": "promote/ledger/stage-to-prod/1", "sha": "b" * 40},
            "base": {"ref": "main", "sha": "c" * 40},
            "html_url": "http://forge.test/acme/gitops/pull/7",
        },
        "repository": {"full_name": "acme/gitops"},
    }
    event.update(overrides)
    return event


BAD_WEBHOOKS = {
    "truncated-json": json.dumps(_pr_event()).encode()[:-25],
    "not-an-object": b'["pull_request"]',
    "wrong-type-number": json.dumps(_pr_event(number="seven", pull_request={"number": "seven"})).encode(),
    "wrong-type-pull-request": json.dumps(_pr_event(pull_request="merged")).encode(),
    "unknown-action": json.dumps(_pr_event(action="exploded")).encode(),
    "empty": b"",
    "binary": b"\xff\xfe\x00garbage",
}


@pytest.fixture
def webhook_repository(db):
    return GitRepository.objects.create(
        name="gitops",
        url="http://forge.test/acme/gitops.git",
        api_url="http://forge.test",
        full_name="acme/gitops",
        forge_kind="github",
        webhook_secret=WEBHOOK_SECRET,
        allow_http=True,
    )


def _audit_count() -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.exclude(action="webhook.rejected").count()


@pytest.mark.parametrize("case", list(BAD_WEBHOOKS))
def test_a_malformed_signed_webhook_is_answered_400_and_changes_nothing(webhook_repository, case: str):
    from promotions.models import Promotion
    from sandbox.forge import signature

    body = BAD_WEBHOOKS[case]
    before = (_audit_count(), list(Promotion.objects.values_list("pk", "state")))
    response = Client().post(
        "/webhooks/forge/gitops/",
        data=body,
        content_type="application/json",
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": f"fuzz-{case}",
            "X-Hub-Signature-256": signature(WEBHOOK_SECRET, body),
        },
    )
    # An unknown action is a valid delivery the portal may ignore; everything else is a 400.
    if case == "unknown-action":
        assert response.status_code in (200, 202, 400), response.content
    else:
        assert response.status_code == 400, (response.status_code, response.content)
        error = response.json()["error"]
        assert error and "Traceback" not in error
    assert (_audit_count(), list(Promotion.objects.values_list("pk", "state"))) == before


def test_an_unsigned_webhook_is_refused_before_its_body_is_read(webhook_repository):
    response = Client().post(
        "/webhooks/forge/gitops/",
        data=b"{not json",
        content_type="application/json",
        headers={"X-GitHub-Event": "pull_request"},
    )
    assert response.status_code == 403


# -- Argo CD responses ----------------------------------------------------------------------------


def _rewrite_list(fn):
    def mangle(status, headers, body):
        data = json.loads(body)
        fn(data)
        return status, headers, json.dumps(data).encode()

    return mangle


def _truncate(status, headers, body):
    return status, headers, body[: len(body) // 2]


def _first_item(data: dict) -> dict:
    return data["items"][0]


BAD_ARGO = {
    "truncated-json": _truncate,
    "html-instead-of-json": lambda s, h, b: (
        200,
        {"Content-Type": "text/html"},
        b"<html><body>Login</body></html>",
    ),
    "items-not-a-list": _rewrite_list(lambda d: d.update(items={"a": 1})),
    "name-not-a-string": _rewrite_list(lambda d: _first_item(d)["metadata"].update(name=42)),
    "health-unknown-enum": _rewrite_list(
        lambda d: _first_item(d)["status"]["health"].update(status="Exploding")
    ),
    "sync-unknown-enum": _rewrite_list(lambda d: _first_item(d)["status"]["sync"].update(status="Sideways")),
    "history-wrong-type": _rewrite_list(lambda d: _first_item(d)["status"].update(history="yesterday")),
}


def _inventory_snapshot() -> tuple:
    return (
        list(
            ArgoApplication.objects.order_by("name").values_list(
                "name", "revision", "health_status", "deleted_at"
            )
        ),
        list(Deployment.objects.order_by("pk").values_list("pk", "revision")),
        list(Cluster.objects.order_by("pk").values_list("pk", "name")),
    )


@pytest.fixture
def argo_proxy(argocd):
    from tests.faults.proxy import FaultProxy

    proxy = FaultProxy(argocd.base_url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("case", list(BAD_ARGO))
def test_a_malformed_argocd_answer_is_a_clear_error_and_no_partial_write(sandbox_inventory, argo_proxy, case):
    from integrations.argocd import ArgoCDClient
    from inventory.poll import instance_poll

    box = sandbox_inventory
    # A change since the first poll, so a partial write would show.
    box.argocd.faults.update({"degraded_tags": [_a_prod_tag()]})
    box.refresh()
    before = _inventory_snapshot()
    argo_proxy.mangle(r"^/api/v1/applications(\?|$)", BAD_ARGO[case])
    client = ArgoCDClient(argo_proxy.base_url, ARGOCD_TOKEN, allow_http=True, timeout=(2, 10))

    result = instance_poll(instance_id=box.instance.pk, client=client)
    assert result.error, f"{case}: the malformed answer was accepted"
    assert "Traceback" not in result.error and len(result.error) < 1000
    assert _inventory_snapshot() == before, f"{case}: a partial write happened"
    instance = ArgoInstance.objects.get(pk=box.instance.pk)
    assert instance.is_stale and instance.last_error == result.error


def _a_prod_tag() -> str:
    for app in ArgoApplication.objects.filter(environment__name="prod").exclude(images=[]):
        if "@" not in app.images[0]:
            return app.images[0].rsplit(":", 1)[-1]
    pytest.skip("no prod app pinned by tag")
