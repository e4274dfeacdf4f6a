"""Every URL x every role (and project- and environment-scoped users): no unexpected success.

The URL patterns are enumerated from the resolver, recursively. Each one needs an entry in RULES
saying who may GET and who may POST (a new URL without an entry fails
``test_every_url_pattern_has_a_rule``, and a stale entry fails ``test_every_rule_names_a_url``).

Subjects: anonymous, one user per global role, a release manager, approver, on-call and auditor
scoped to projects ``payments-*`` (``rm_payments``, ``approver_payments``, ...), and
``approver_checkout_stage``, an approver of the checkout projects in environment ``stage`` only.
Objects in path parameters belong to the ``checkout`` project in ``prod``, so the payments-scoped
subjects must be refused on every object URL and must not see checkout rows in lists, while the
stage approver sees checkout objects but may not approve anything that targets prod.

Every request is sent three ways where it applies: with a session (and, for GET, as an htmx
partial), for /api/ URLs with ``Authorization: Bearer <token>`` of the subject's own API token and
no session (same expected outcome, and no CSRF token needed), and for each URL some subject may
POST to, once as that subject with a session but without a CSRF token (refused with 403) next to
the same POST with the token (allowed).

Outcomes: *denied* is 401/403/404 or a redirect to a login page; *not served* is 405; *allowed* is
anything else below 500. An allowed subject may still get 400/409 (the empty POST the matrix sends
is invalid): what matters is that the permission check let it through. A denied subject must be
denied; a 500 is always a failure.

Adding a URL is one line: ``"app:name": Rule(get=WHO, post=WHO, kw=lambda w: {...})``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from accounts.roles import ALL_ROLES
from accounts.services import api_token_create

from .conftest import PAYMENTS_SCOPED, SCOPED_GRANTS, SUBJECTS, make_subjects
from .htmlcheck import csp_nonce, inline_code_problems

URLCONF = "tests.security.oidc_urls"  # the project's URLs with the OIDC endpoints mounted

# --- who ------------------------------------------------------------------------------------------
ANON = "anonymous"
EVERYONE = frozenset(SUBJECTS)
SIGNED_IN = EVERYONE - {ANON}
# Object URLs point at a checkout app in prod: the payments-scoped subjects are out of scope there.
CHECKOUT_VIEWERS = SIGNED_IN - PAYMENTS_SCOPED
# Live cluster reads (drift resources) also apply the grant's environment: the stage approver sees
# checkout pages by project but not the prod cluster's resources.
CHECKOUT_PROD_VIEWERS = CHECKOUT_VIEWERS - {"approver_checkout_stage"}
NOBODY: frozenset[str] = frozenset()


def roles(*names: str) -> frozenset[str]:
    """Subjects holding one of ``names`` on the world's checkout objects in prod (admin holds all).

    Only global holders qualify: no scoped subject holds a role on checkout in prod.
    """
    assert set(names) <= set(ALL_ROLES), names
    return frozenset({*names, "admin"})


def anywhere(*names: str) -> frozenset[str]:
    """Subjects holding one of ``names`` in some scope: who passes a page-level (unscoped) check."""
    scoped = {subject for subject, (role, _, _) in SCOPED_GRANTS.items() if role in names}
    return roles(*names) | scoped


AUDITORS = roles("auditor")
ONCALL = roles("oncall")
RELEASE_MANAGERS = roles("release_manager")
APPROVERS = roles("approver")


@dataclass(frozen=True)
class Rule:
    """Who may GET and POST a URL; None means the method is not served (405 for everyone)."""

    get: frozenset[str] | None
    post: frozenset[str] | None = None
    kw: Callable[[World], dict[str, Any]] | None = None  # path parameters, from the world's objects
    data: Callable[[World], dict[str, Any]] | None = None  # POST body (form, or JSON for /api/)
    query: str = ""  # query string for GET
    leak_check: bool = True  # an allowed payments-scoped response must not show checkout objects
    note: str = ""


# --- the table ------------------------------------------------------------------------------------
RULES: dict[str, Rule] = {
    # foundation
    "home": Rule(get=EVERYONE, note="only redirects to the matrix (which checks); GET only"),
    "healthz": Rule(get=EVERYONE),
    "readyz": Rule(get=EVERYONE),
    "login": Rule(get=EVERYONE, post=EVERYONE, note="the sign-in form; a bad POST re-renders it"),
    "logout": Rule(get=None, post=EVERYONE),
    "api-schema": Rule(get=EVERYONE, note="the OpenAPI document is public, like the docs"),
    # single sign-on (mounted when OIDC_ENABLED)
    "oidc_authentication_init": Rule(get=EVERYONE),
    "oidc_authentication_callback": Rule(get=EVERYONE, note="without state it redirects to the failure URL"),
    "oidc_logout": Rule(get=None, post=EVERYONE),
    # insight: DORA metrics and drift for viewers, notification subscriptions for admins
    "insight:dora": Rule(get=SIGNED_IN),
    "insight:dora_csv": Rule(get=SIGNED_IN),
    "insight:drift": Rule(get=SIGNED_IN),
    "insight:drift_resources": Rule(get=CHECKOUT_PROD_VIEWERS, kw=lambda w: {"pk": w.argo_app.pk}),
    "insight:notifications": Rule(get=roles("admin")),
    "insight:subscription_new": Rule(get=None, post=roles("admin")),
    "insight:subscription_toggle": Rule(
        get=None, post=roles("admin"), kw=lambda w: {"pk": w.subscription.pk}
    ),
    "insight:subscription_delete": Rule(
        get=None, post=roles("admin"), kw=lambda w: {"pk": w.subscription.pk}
    ),
    # Prometheus: bearer token only (METRICS_TOKEN or an API token); a browser session gets 401
    "metrics": Rule(get=NOBODY),
    # forge webhooks: authenticated by the delivery's signature only; an unsigned POST is refused
    # whoever is signed in (a session confers nothing)
    "webhooks:forge": Rule(get=None, post=NOBODY, kw=lambda w: {"repository": w.app.repository.name}),
    # accounts
    "accounts:tokens": Rule(get=SIGNED_IN),
    "accounts:token_create": Rule(get=None, post=SIGNED_IN),
    "accounts:token_revoke": Rule(
        get=None,
        post=frozenset({"viewer", "admin"}),
        kw=lambda w: {"pk": w.token.pk},
        note="own token or admin",
    ),
    # inventory
    "inventory:matrix": Rule(get=SIGNED_IN),
    "inventory:app": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"name": w.app.name}),
    "inventory:instances": Rule(get=SIGNED_IN),
    "api-deployments": Rule(get=SIGNED_IN),
    "api-application-history": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"name": w.app.name}),
    # promotions (the world's promotion was requested by the global release manager)
    "promotions:list": Rule(get=SIGNED_IN),
    "promotions:new": Rule(get=RELEASE_MANAGERS, query="app={app}&from=stage&to=prod"),
    "promotions:create": Rule(
        get=None, post=RELEASE_MANAGERS, data=lambda w: {"app": w.app.name, "from": "stage", "to": "prod"}
    ),
    "promotions:detail": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:checks": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:rendered": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:approve": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:reject": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:checklist_override": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:cancel": Rule(get=None, post=RELEASE_MANAGERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:sync_override": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "promotions:sync_retry": Rule(
        get=None,
        post=roles("release_manager", "approver"),
        kw=lambda w: {"pk": w.promotion.pk},
        note="a failed sync, retried by a release manager or approver of the apps",
    ),
    "promotions:block_clear": Rule(get=None, post=RELEASE_MANAGERS, kw=lambda w: {"pk": w.block.pk}),
    "api-promotions": Rule(
        get=SIGNED_IN,
        post=RELEASE_MANAGERS,
        data=lambda w: {"apps": [w.app.name], "from": "stage", "to": "prod"},
    ),
    "api-promotion": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.promotion.pk}),
    "api-promotion-approve": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "api-promotion-reject": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.promotion.pk}),
    "api-promotion-checklist-override": Rule(
        get=None,
        post=APPROVERS,
        kw=lambda w: {"pk": w.promotion.pk},
        data=lambda w: {"reason": "the matrix checks who may override"},
    ),
    "api-promotion-cancel": Rule(get=None, post=RELEASE_MANAGERS, kw=lambda w: {"pk": w.promotion.pk}),
    "api-promotion-sync-retry": Rule(
        get=None,
        post=roles("release_manager", "approver"),
        kw=lambda w: {"pk": w.promotion.pk},
        note="a failed sync, retried by a release manager or approver of the apps (as promotions:sync_retry)",
    ),
    "api-promotion-sync-override": Rule(
        get=None,
        post=APPROVERS,
        kw=lambda w: {"pk": w.promotion.pk},
        data=lambda w: {"reason": "the matrix checks who may override the window"},
    ),
    # rollbacks
    "rollbacks:list": Rule(get=SIGNED_IN),
    "rollbacks:new": Rule(
        get=ONCALL, post=ONCALL, query="app={app}&env=prod", data=lambda w: {"app": w.app.name, "env": "prod"}
    ),
    "rollbacks:detail": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:checks": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:rendered": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:cancel": Rule(get=None, post=ONCALL, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:approve_after": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:sync_override": Rule(get=None, post=APPROVERS, kw=lambda w: {"pk": w.rollback.pk}),
    "rollbacks:sync_retry": Rule(
        get=None,
        post=roles("oncall", "approver"),
        kw=lambda w: {"pk": w.rollback.pk},
        note="a failed sync, retried by an on-call engineer or approver of the app",
    ),
    "api-rollbacks": Rule(
        get=SIGNED_IN,
        post=ONCALL,
        data=lambda w: {"app": w.app.name, "environment": "prod", "mode": "previous", "reason": "matrix"},
    ),
    "api-rollback": Rule(get=CHECKOUT_VIEWERS, kw=lambda w: {"pk": w.rollback.pk}),
    "api-rollback-cancel": Rule(get=None, post=ONCALL, kw=lambda w: {"pk": w.rollback.pk}),
    "api-rollback-sync-retry": Rule(
        get=None,
        post=roles("oncall", "approver"),
        kw=lambda w: {"pk": w.rollback.pk},
        note="a failed sync, retried by an on-call engineer or approver of the app (as rollbacks:sync_retry)",
    ),
    "api-rollback-sync-override": Rule(
        get=None,
        post=APPROVERS,
        kw=lambda w: {"pk": w.rollback.pk},
        data=lambda w: {"reason": "the matrix checks who may override the window"},
    ),
    # audit
    # (a scoped auditor opens the lists and exports, filtered to its projects, not checkout rows)
    "audit:event_list": Rule(get=anywhere("auditor")),
    "audit:event_detail": Rule(get=AUDITORS, kw=lambda w: {"sequence": w.event.sequence}),
    "audit:change_list": Rule(get=anywhere("auditor")),
    "audit:change_detail": Rule(get=AUDITORS, kw=lambda w: {"pk": w.change.pk}),
    "audit:export": Rule(get=None, post=anywhere("auditor"), kw=lambda w: {"fmt": "csv"}),
    "audit:public_key": Rule(get=anywhere("auditor")),
    "api-audit-events": Rule(get=anywhere("auditor")),
    "api-audit-changes": Rule(get=anywhere("auditor")),
}


# URL name prefixes covered by one rule each (third-party sites with many patterns).
PREFIX_RULES: dict[str, Rule] = {
    # The Django admin is for staff accounts only; no portal role makes a user staff.
    "admin:": Rule(get=NOBODY, post=NOBODY, leak_check=False),
    "django-admin/": Rule(get=NOBODY, post=NOBODY, leak_check=False),  # the admin's unnamed redirects
}
RULES.update(
    {
        "admin:login": Rule(
            get=EVERYONE, post=EVERYONE, leak_check=False, note="the admin's own sign-in form"
        ),
        "admin:logout": Rule(
            get=EVERYONE, post=EVERYONE, leak_check=False, note="redirects to the admin index"
        ),
    }
)
ADMIN_KWARGS = {
    "app_label": "auth",
    "object_id": "1",
    "content_type_id": "1",
    "url": "x",
    "model_name": "user",
}


# --- the objects behind path parameters ------------------------------------------------------------
@dataclass
class World:
    subjects: dict[str, Any]
    app: Any = None
    token: Any = None
    rollback: Any = None
    promotion: Any = None
    argo_app: Any = None
    subscription: Any = None
    block: Any = None
    event: Any = None
    change: Any = None
    bearer: dict[str, str] = field(default_factory=dict)  # subject -> raw API token of its own
    extra: dict[str, Any] = field(default_factory=dict)


def build_world() -> World:
    """Create one checkout app with its environments, Argo CD state, commits, requests and evidence."""
    from inventory import models as inv
    from tests.factories import (
        ApplicationFactory,
        ArgoInstanceFactory,
        EnvironmentFactory,
        GitRepositoryFactory,
    )

    world = World(subjects=make_subjects())
    envs = {
        name: EnvironmentFactory(name=name, order=order, production_like=name == "prod")
        for order, name in enumerate(("dev", "stage", "prod"))
    }
    repo = GitRepositoryFactory()
    world.app = ApplicationFactory(name="checkout-hidden-app", project="checkout", repository=repo)
    instance = ArgoInstanceFactory()
    now = timezone.now()
    for env in envs.values():
        cluster = inv.Cluster.objects.create(
            instance=instance,
            name=f"{env.name}-eu-west-1",
            server=f"https://{env.name}-eu-west-1.k8s.example",
            labels={"env": env.name},
            environment=env,
        )
        argo = inv.ArgoApplication.objects.create(
            instance=instance,
            name=f"checkout-hidden-app-{cluster.name}",
            application=world.app,
            environment=env,
            cluster=cluster,
            project="checkout",
            repo_url=repo.url,
            path=f"environments/{env.name}/checkout-hidden-app",
            target_revision="main",
            sync_status="Synced",
            health_status="Healthy",
            revision="a" * 40,
            deployed_revision="a" * 40,
            deployed_at=now,
            version="1.4.2",
        )
        world.argo_app = argo  # the prod one (last)
        for history_id, sha in ((1, "b" * 40), (2, "a" * 40)):
            inv.Deployment.objects.create(
                argo_app=argo,
                history_id=history_id,
                application=world.app,
                environment=env,
                cluster=cluster,
                revision=sha,
                deployed_at=now - timedelta(hours=3 - history_id),
                version=f"1.4.{history_id}",
            )
    for seq, sha in enumerate(("b" * 40, "a" * 40), start=1):
        commit = inv.Commit.objects.create(
            repository=repo,
            sha=sha,
            seq=seq,
            parents=[],
            author_name="Dev",
            author_email="dev@example.com",
            authored_at=now,
            committer_name="Dev",
            committed_at=now,
            message=f"checkout-hidden-app: release {seq}",
        )
        inv.CommitTouch.objects.create(
            commit=commit,
            application=world.app,
            environment=envs["prod"],
            seq=seq,
            paths=["environments/prod/x"],
        )
    world.token, _ = api_token_create(user=world.subjects["viewer"], name="matrix", expires_in_days=7)
    for subject, user in world.subjects.items():
        if user is not None:
            world.bearer[subject] = api_token_create(user=user, name="matrix-bearer", expires_in_days=7)[1]
    _build_requests(world, envs)
    _build_evidence(world)
    return world


def _build_requests(world: World, envs: dict[str, Any]) -> None:
    from promotions.models import Promotion, PromotionBlock, PromotionItem
    from rollbacks.models import RollbackRequest

    world.promotion = Promotion.objects.create(
        source_env=envs["stage"],
        target_env=envs["prod"],
        repository=world.app.repository,
        requested_by=world.subjects["release_manager"],
        requested_by_name="sec-release_manager",
        note="matrix",
    )
    PromotionItem.objects.create(
        promotion=world.promotion,
        application=world.app,
        target_env=envs["prod"],
        source_revision="a" * 40,
        version_before="1.4.1",
        version_after="1.4.2",
    )
    world.block = PromotionBlock.objects.create(
        application=world.app,
        environment=envs["prod"],
        blocked_version="1.4.2",
        reason="matrix",
        source_type="rollback",
    )

    world.rollback = RollbackRequest.objects.create(
        application=world.app,
        environment=envs["prod"],
        mode="previous",
        requested_by=world.subjects["oncall"],
        requested_by_name="sec-oncall",
        reason="matrix",
        base_branch="main",
        current_revision="a" * 40,
        target_revision="b" * 40,
        revert_shas=["a" * 40],
    )


def _build_evidence(world: World) -> None:
    from audit.models import ChangeRecord
    from audit.services import audit_event_record
    from insight.models import Subscription

    world.subscription = Subscription.objects.create(
        name="checkout-alerts",
        project_glob="checkout",
        event_kinds=["promotion.*"],
        url="https://hooks.example.com/portal",
        created_by=world.subjects["admin"],
    )

    world.event = audit_event_record(
        action="rollback.requested",
        actor=world.subjects["oncall"],
        target_type="rollback",
        target_id=world.rollback.pk,
        target_label="checkout-hidden-app prod",
        app=world.app.name,
        environment="prod",
        message="matrix",
    )
    world.change = ChangeRecord.objects.create(
        kind="rollback",
        source_type="rollback",
        source_id=str(world.rollback.pk),
        app=world.app.name,
        environment="prod",
        project="checkout",
        title="Roll back checkout-hidden-app",
    )


# --- enumerate ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    key: str  # "namespace:name", or the route when the pattern has no name
    route: str
    name: str | None
    params: tuple[str, ...]


def iter_patterns(
    patterns: list[Any] | None = None, prefix: str = "", namespace: str = ""
) -> Iterator[Pattern]:
    """Yield every URL pattern of the project, walking included URLconfs recursively."""
    if patterns is None:
        patterns = get_resolver(URLCONF).url_patterns
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from iter_patterns(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            route = prefix + str(entry.pattern)
            name = f"{namespace}{entry.name}" if entry.name else None
            yield Pattern(
                key=name or route, route=route, name=name, params=tuple(entry.pattern.regex.groupindex)
            )


ALL_PATTERNS = sorted({p.key: p for p in iter_patterns()}.values(), key=lambda p: p.key)


def rule_for(pattern: Pattern) -> Rule | None:
    if pattern.key in RULES:
        return RULES[pattern.key]
    for prefix, rule in PREFIX_RULES.items():
        if pattern.key.startswith(prefix):
            return rule
    return None


def test_every_url_pattern_has_a_rule():
    missing = [f"{p.key}  ({p.route})" for p in ALL_PATTERNS if rule_for(p) is None]
    assert not missing, "URL patterns without a permission rule; add them to RULES:\n" + "\n".join(missing)


def test_every_rule_names_a_url():
    known = {p.key for p in ALL_PATTERNS}
    assert not sorted(set(RULES) - known), "stale RULES entries"


def test_unnamed_patterns_are_not_portal_urls():
    """An unnamed pattern can't be reversed, so the matrix can't reach it: name every portal URL."""
    unnamed = [p.route for p in ALL_PATTERNS if p.name is None and not p.route.startswith("django-admin/")]
    assert not unnamed, unnamed


# --- classify -------------------------------------------------------------------------------------
def outcome(response: Any) -> str:
    status = response.status_code
    if status >= 500:
        return f"error {status}"
    if status == 405:
        return "not served"
    if status in (401, 403, 404):
        return "denied"
    location = response.get("Location", "")
    if status in (301, 302, 303, 307, 308) and "login" in location and "next=" in location:
        return "denied"  # sent to a sign-in page to come back afterwards
    return "allowed"


def _fill_route(route: str, values: dict[str, str]) -> str:
    """Build a path for an unnamed pattern from its route (path converters or regex groups)."""
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values[m.group(1)], path)
    return "/" + path.lstrip("^").rstrip("$")


def _url(pattern: Pattern, rule: Rule, world: World) -> str:
    if pattern.name is None:
        return _fill_route(pattern.route, {k: ADMIN_KWARGS.get(k, "1") for k in pattern.params})
    if pattern.name.startswith("admin:"):
        kwargs = {k: ADMIN_KWARGS.get(k, "1") for k in pattern.params}
    else:
        kwargs = rule.kw(world) if rule.kw else {}
        missing = set(pattern.params) - set(kwargs)
        assert not missing, f"{pattern.key}: Rule.kw must fill {sorted(missing)}"
    url = reverse(pattern.name, kwargs=kwargs, urlconf=URLCONF)
    if rule.query:
        url += "?" + rule.query.format(app=world.app.name)
    return url


def _request(
    client: Client,
    method: str,
    url: str,
    rule: Rule,
    world: World,
    *,
    htmx: bool = False,
    headers: dict[str, str] | None = None,
) -> Any:
    headers = {**(headers or {}), **({"HTTP_HX_REQUEST": "true"} if htmx else {})}
    if method == "GET":
        return client.get(url, **headers)
    data = rule.data(world) if rule.data else {}
    if url.startswith("/api/"):
        return client.post(url, data=json.dumps(data), content_type="application/json", **headers)
    return client.post(url, data=data, **headers)


def _check_response(subject: str, method: str, response: Any, world: World, rule: Rule) -> list[str]:
    """Extra checks on an allowed response: CSP-clean HTML, no checkout rows for payments-scoped users."""
    problems = []
    content_type = response.get("Content-Type", "")
    if response.status_code == 200 and content_type.startswith("text/html"):
        html = response.content.decode()
        nonce = csp_nonce(response.get("Content-Security-Policy", ""))
        problems += [f"CSP: {p}" for p in inline_code_problems(html, nonce=nonce)]
    if (
        subject in PAYMENTS_SCOPED
        and rule.leak_check
        and world.app is not None
        and response.status_code == 200
    ):
        body = b"".join(response.streaming_content) if response.streaming else response.content
        if world.app.name.encode() in body:
            problems.append(f"shows a checkout object to the payments-scoped {subject}")
    return problems


@pytest.fixture
def settings_for_matrix(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    settings.ROOT_URLCONF = URLCONF
    settings.OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID = "portal"
    settings.OIDC_RP_CLIENT_SECRET = "matrix-secret"
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://idp.example/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://idp.example/token"
    settings.OIDC_OP_USER_ENDPOINT = "https://idp.example/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = "https://idp.example/jwks"
    return settings


def _expected(subject: str, allowed: frozenset[str] | None) -> str:
    if allowed is None:
        return "not served"
    return "allowed" if subject in allowed else "denied"


def _judge(label: str, response: Any, expected: str, check: Callable[[], list[str]]) -> list[str]:
    """Compare a response's outcome with the expected one; run ``check`` on an allowed response."""
    got = outcome(response)
    # A method nobody is served may also be refused before the view answers 405.
    ok = got in ("not served", "denied") if expected == "not served" else got == expected
    if not ok:
        return [f"{label}: expected {expected}, got {got} ({response.status_code})"]
    return [f"{label}: {p}" for p in check()] if got == "allowed" else []


def _csrf_subject(rule: Rule) -> str | None:
    """Pick one subject allowed to POST (a signed-in one when there is), None when nobody may."""
    allowed = [s for s in SUBJECTS if rule.post and s in rule.post]
    signed_in = [s for s in allowed if s != ANON]
    return (signed_in or allowed or [None])[0]


def _csrf_failures(url: str, rule: Rule, world: World) -> list[str]:
    """Send a session POST without and then with the CSRF token: refused (403), then allowed."""
    subject = _csrf_subject(rule)
    if subject is None:
        return []
    failures = []
    secret = get_random_string(32)  # a CSRF secret; Django accepts it unmasked in the header too
    for with_token in (False, True):
        sid = transaction.savepoint()
        try:
            client = Client(enforce_csrf_checks=True, raise_request_exception=False)
            if world.subjects[subject] is not None:
                client.force_login(world.subjects[subject])
            client.cookies[settings.CSRF_COOKIE_NAME] = secret
            headers = {settings.CSRF_HEADER_NAME: secret} if with_token else {}
            response = _request(client, "POST", url, rule, world, headers=headers)
            label = f"{subject:16} POST csrf {'token' if with_token else 'none '} {url}"
            if with_token:
                failures += _judge(label, response, "allowed", list)
            elif response.status_code != 403:
                failures.append(f"{label}: expected 403 without a CSRF token, got {response.status_code}")
        finally:
            transaction.savepoint_rollback(sid)
    return failures


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=[p.key for p in ALL_PATTERNS])
def test_permission_matrix(pattern: Pattern, settings_for_matrix):
    rule = rule_for(pattern)
    if rule is None:
        pytest.fail(f"no rule for {pattern.key} ({pattern.route}): add one to RULES")
    # The Django admin refuses non-staff users before looking at any object: subjects suffice.
    admin_site = pattern.key.startswith(("admin:", "django-admin/"))
    world = World(subjects=make_subjects()) if admin_site else build_world()
    url = _url(pattern, rule, world)
    failures: list[str] = []
    for subject in SUBJECTS:
        for method, allowed in (("GET", rule.get), ("POST", rule.post)):
            # session (and, for GET, the htmx partial); for /api/ also the subject's bearer token
            ways = ["session", "htmx"] if method == "GET" else ["session"]
            if url.startswith("/api/") and subject in world.bearer:
                ways.append("bearer")
            for way in ways:
                label = f"{subject:16} {method:4} {way:7} {url}"
                # Each request runs in a savepoint that is rolled back: one subject's POST
                # (a revoke, a cancel) never changes what the next subject sees.
                sid = transaction.savepoint()
                try:
                    # Bearer requests carry no ambient credentials: they must pass without CSRF.
                    client = Client(enforce_csrf_checks=way == "bearer", raise_request_exception=False)
                    headers = {}
                    if way == "bearer":
                        headers["HTTP_AUTHORIZATION"] = f"Bearer {world.bearer[subject]}"
                    elif world.subjects[subject] is not None:
                        client.force_login(world.subjects[subject])
                    response = _request(client, method, url, rule, world, htmx=way == "htmx", headers=headers)
                    failures += _judge(
                        label,
                        response,
                        _expected(subject, allowed),
                        lambda: _check_response(subject, method, response, world, rule),
                    )
                finally:
                    transaction.savepoint_rollback(sid)
    failures += _csrf_failures(url, rule, world)
    assert not failures, f"{pattern.key} ({rule.note or 'no note'}):\n" + "\n".join(failures)
