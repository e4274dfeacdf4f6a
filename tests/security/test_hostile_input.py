"""Hostile input corpus: every external or user-supplied text the portal shows is inert.

Each payload is written into every field that comes from outside (commit messages and authors from
Git, Argo CD health and operation messages, audit messages, change-record titles (PR titles),
promotion notes, rollback reasons, API token names, a failed sign-in's username), then every page
an admin may GET is crawled (the list comes from the permission matrix's RULES, so new pages are
covered as soon as they get a rule). Each payload must be escaped in HTML, neutralised in CSV
exports, JSON-encoded in API answers, and refused before it reaches git.
"""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from accounts.services import api_token_create
from audit.services import audit_event_record
from integrations import gitrepo

from .htmlcheck import csp_nonce, inline_code_problems
from .test_permission_matrix import (
    ALL_PATTERNS,
    URLCONF,
    World,
    _url,
    build_world,
    rule_for,
)

CORPUS = [
    "<script>alert(1)</script>",
    'hx-get="/x"',
    '=HYPERLINK("http://x")',
    "--upload-pack=touch /tmp/pwn",
    "-uX",
    "ext::sh -c touch% /tmp/pwn",
    "../etc/passwd",
]
# The payloads that mean something to git: as a ref, a revision, a path or a remote they must be refused.
GIT_HOSTILE = ["--upload-pack=touch /tmp/pwn", "-uX", "ext::sh -c touch% /tmp/pwn", "../etc/passwd"]


def poison(world: World, payload: str) -> None:
    """Write ``payload`` into every externally sourced field of the world."""
    from inventory.models import ArgoApplication, Commit

    Commit.objects.filter(repository=world.app.repository).update(
        message=payload, author_name=payload, committer_name=payload
    )
    ArgoApplication.objects.filter(application=world.app).update(
        health_status="Degraded", health_message=payload, operation_phase="Failed", operation_message=payload
    )
    type(world.change).objects.filter(pk=world.change.pk).update(title=payload)
    type(world.promotion).objects.filter(pk=world.promotion.pk).update(note=payload, failure_reason=payload)
    type(world.rollback).objects.filter(pk=world.rollback.pk).update(reason=payload, incident=payload)
    world.event = audit_event_record(
        action="argocd.instance_stale",
        target_type="argo_app",
        target_label=payload,
        app=world.app.name,
        environment="prod",
        message=payload,
        after={"message": payload},
    )
    api_token_create(user=world.subjects["admin"], name=payload, expires_in_days=7)


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.attributes += [(tag, name, value) for name, value in attrs]


def html_problems(html: str, payload: str, nonce: str | None) -> list[str]:
    problems = [f"CSP: {p}" for p in inline_code_problems(html, nonce=nonce)]
    if any(ch in payload for ch in "<>\"'") and payload in html:
        problems.append(f"raw payload {payload!r} in the page")
    parser = _Attributes()
    parser.feed(html)
    for tag, name, value in parser.attributes:
        if name.startswith("hx-") and value == "/x":
            problems.append(f"injected htmx attribute on <{tag}>")
        if name == "href" and value and value.startswith("http://x"):
            problems.append(f"injected link on <{tag}>")
    return problems


@pytest.fixture
def hostile_settings(settings):
    settings.ROOT_URLCONF = URLCONF
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


def _admin_pages():
    for pattern in ALL_PATTERNS:
        rule = rule_for(pattern)
        if (
            rule is None
            or rule.get is None
            or "admin" not in rule.get
            or pattern.key.startswith(("admin:", "django-admin/"))
        ):
            continue
        if pattern.key.startswith("oidc_"):
            continue
        yield pattern, rule


@pytest.mark.django_db
@pytest.mark.parametrize("payload", CORPUS)
def test_pages_render_hostile_text_inert(payload, hostile_settings):
    world = build_world()
    poison(world, payload)
    client = Client(raise_request_exception=False)
    client.force_login(world.subjects["admin"])
    escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    failures: list[str] = []
    rendered_on: list[str] = []
    for pattern, rule in _admin_pages():
        url = _url(pattern, rule, world)
        for htmx in (False, True):
            response = client.get(url, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
            if response.status_code >= 500:
                failures.append(f"{url}: server error {response.status_code}")
                continue
            content_type = response.get("Content-Type", "")
            if response.streaming or response.status_code != 200:
                continue
            body = response.content.decode()
            if content_type.startswith("application/json"):
                json.loads(body)  # well-formed: the payload is a JSON string, not markup
                assert response["X-Content-Type-Options"] == "nosniff"
                continue
            if not content_type.startswith("text/html"):
                continue
            nonce = csp_nonce(response.get("Content-Security-Policy", ""))
            failures += [
                f"{url}{' (htmx)' if htmx else ''}: {p}" for p in html_problems(body, payload, nonce)
            ]
            if escaped in body or payload.replace('"', "&quot;") in body:
                rendered_on.append(pattern.key)
    assert not failures, "\n".join(failures)
    # The test is not vacuous: the payload is visible (escaped) where external text is shown.
    for page in ("inventory:app", "audit:event_list", "accounts:tokens"):
        assert page in rendered_on, f"{payload!r} not shown on {page}; rendered on {sorted(set(rendered_on))}"


@pytest.mark.django_db
@pytest.mark.parametrize("payload", CORPUS)
def test_csv_exports_neutralise_formulas(payload, hostile_settings):
    world = build_world()
    poison(world, payload)
    client = Client()
    client.force_login(world.subjects["auditor"])
    response = client.post(reverse("audit:export", kwargs={"fmt": "csv"}, urlconf=URLCONF), {})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    hostile_cells = [cell for cell in cells if payload in cell]
    assert hostile_cells, "the payload was exported"
    for cell in hostile_cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


@pytest.mark.django_db
@pytest.mark.parametrize("payload", CORPUS)
def test_api_answers_echo_hostile_text_only_as_json(payload, hostile_settings):
    world = build_world()
    poison(world, payload)
    client = Client()
    _, raw = api_token_create(user=world.subjects["release_manager"], name="ci", expires_in_days=7)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    bodies = [
        {"apps": [payload], "from": "stage", "to": "prod"},
        {"apps": [world.app.name], "from": payload, "to": "prod"},
        {"apps": [world.app.name], "from": "stage", "to": "prod", "note": payload},
    ]
    for body in bodies:
        response = client.post(
            "/api/v1/promotions", data=json.dumps(body), content_type="application/json", **headers
        )
        assert response.status_code < 500, response.content
        assert response["Content-Type"].startswith("application/json")
        assert response["X-Content-Type-Options"] == "nosniff"
        json.loads(response.content)
    for url in (
        "/api/v1/promotions",
        f"/api/v1/promotions/{world.promotion.pk}",
        f"/api/v1/rollbacks/{world.rollback.pk}",
    ):
        response = client.get(url, **headers)
        assert response.status_code == 200 and response["Content-Type"].startswith("application/json"), url


@pytest.mark.parametrize("payload", CORPUS)
def test_remote_urls_from_users_are_refused(payload):
    with pytest.raises(gitrepo.GitError):
        gitrepo.check_remote_url(payload)


@pytest.mark.parametrize("payload", GIT_HOSTILE)
def test_refs_revisions_and_paths_from_users_are_refused_before_git(payload):
    for validate in (gitrepo.validate_ref_name, gitrepo.validate_rev, gitrepo.validate_sha):
        with pytest.raises(gitrepo.InvalidRef):
            validate(payload)
    if payload.startswith(("-", "..", "/")) or "/../" in payload:
        with pytest.raises(gitrepo.InvalidRef):
            gitrepo.validate_repo_path(payload)


@pytest.mark.parametrize(
    "ref", ["main@{1}", "a..b", "HEAD~1", "x:y", "-", "refs/heads/../x", "a b", "feat/.hidden"]
)
def test_ref_syntax_git_would_interpret_is_refused(ref):
    with pytest.raises(gitrepo.InvalidRef):
        gitrepo.validate_rev(ref)


@pytest.mark.django_db
@pytest.mark.parametrize("payload", CORPUS)
def test_sign_in_form_and_token_form_keep_hostile_text_inert(payload, client, hostile_settings):
    failed = client.post(reverse("login"), {"username": payload, "password": "x"})
    assert failed.status_code == 200
    assert not html_problems(failed.content.decode(), payload, csp_nonce(failed["Content-Security-Policy"]))
    from tests.factories import user_with_role

    client.force_login(user_with_role("viewer", username="hostile-viewer"))
    created = client.post(reverse("accounts:token_create"), {"name": payload, "expires_in_days": "30"})
    assert created.status_code == 200
    assert not html_problems(created.content.decode(), payload, csp_nonce(created["Content-Security-Policy"]))
