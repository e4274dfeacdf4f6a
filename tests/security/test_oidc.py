"""Single sign-on: groups claim → roles at every sign-in and refresh; the full code flow against a
local OpenID Connect provider (RS256 ID token, JWKS, PKCE, userinfo)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import OIDCIdentity, RoleGrant
from accounts.oidc import sync_roles_from_claims
from accounts.permissions import has_role, project_visible, roles_of
from accounts.rolemap import RoleMapping, grants_for_groups, parse_role_map
from accounts.services import api_token_create, role_grant_add
from audit.models import AuditEvent
from tests.factories import UserFactory

from .oidc_provider import LocalOIDCProvider

PROBE = "/api/probe/whoami"
ROLE_MAP = "platform-admins=admin,payments-release=release_manager:payments-*,prod-approvers=approver:*:prod"


@pytest.fixture
def role_map(settings):
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_ROLE_MAPPINGS = parse_role_map(ROLE_MAP)
    return settings.OIDC_ROLE_MAPPINGS


def _fresh(user):
    return type(user).objects.get(pk=user.pk)


def test_role_map_parses_global_project_and_environment_scopes():
    assert parse_role_map(ROLE_MAP) == (
        RoleMapping("platform-admins", "admin"),
        RoleMapping("payments-release", "release_manager", "payments-*"),
        RoleMapping("prod-approvers", "approver", "*", "prod"),
    )


@pytest.mark.parametrize(
    "raw", ["admins", "admins=", "=admin", "admins=root", "x=viewer:pay ments", "x=approver:*:prod/eu"]
)
def test_a_bad_role_map_is_refused_naming_the_variable(raw):
    with pytest.raises(ImproperlyConfigured, match="OIDC_ROLE_MAP"):
        parse_role_map(raw)


def test_groups_claim_shapes():
    mappings = parse_role_map(ROLE_MAP)
    assert grants_for_groups(["platform-admins", "other"], mappings) == {("admin", "*", "*")}
    assert grants_for_groups("prod-approvers", mappings) == {("approver", "*", "prod")}
    assert grants_for_groups(None, mappings) == set()
    assert grants_for_groups({"not": "a list"}, mappings) == set()
    assert grants_for_groups([["nested"], 3], mappings) == set()


@pytest.mark.django_db
def test_groups_map_to_scoped_roles(role_map):
    user = UserFactory(username="alice")
    sync_roles_from_claims(user=user, claims={"groups": ["payments-release", "prod-approvers"]})
    user = _fresh(user)
    assert has_role(user, "release_manager", project="payments-api")
    assert not has_role(user, "release_manager", project="checkout")
    assert project_visible(user, "payments-api", "release_manager")
    assert has_role(user, "approver", project="checkout", environment="prod")
    assert not has_role(user, "approver", project="checkout", environment="stage")
    assert not has_role(user, "admin")
    assert set(RoleGrant.objects.filter(user=user).values_list("source", flat=True)) == {"oidc"}


@pytest.mark.django_db
def test_admin_group_grants_the_global_admin_role(role_map):
    user = UserFactory(username="root-by-idp")
    sync_roles_from_claims(user=user, claims={"groups": ["platform-admins"]})
    user = _fresh(user)
    assert has_role(user, "approver", project="anything", environment="prod")
    assert roles_of(user) == ["admin"]


@pytest.mark.django_db
def test_leaving_a_group_removes_the_role_and_keeps_local_grants(role_map):
    user = UserFactory(username="bob")
    role_grant_add(user=user, role="oncall", project="payments-*")  # local, scoped
    role_grant_add(user=user, role="auditor")  # local, global (group)
    sync_roles_from_claims(user=user, claims={"groups": ["payments-release", "platform-admins"]})
    assert has_role(_fresh(user), "admin")

    changed = sync_roles_from_claims(user=user, claims={"groups": ["payments-release"]})

    user = _fresh(user)
    assert changed
    assert not has_role(user, "admin")
    assert has_role(user, "release_manager", project="payments-x")
    assert has_role(user, "oncall", project="payments-x")
    assert has_role(user, "auditor")
    assert RoleGrant.objects.get(user=user, role="oncall").source == "local"
    event = AuditEvent.objects.filter(action="role.synced").order_by("-sequence").first()
    assert event.actor_name == "system:oidc"
    assert event.before["grants"] == [["admin", "*", "*"], ["release_manager", "payments-*", "*"]]
    assert event.after["grants"] == [["release_manager", "payments-*", "*"]]

    # No groups at all: every identity-provider role goes, local ones stay.
    sync_roles_from_claims(user=user, claims={})
    user = _fresh(user)
    assert not RoleGrant.objects.filter(user=user, source="oidc").exists()
    assert set(roles_of(user)) == {"oncall", "auditor"}


@pytest.mark.django_db
def test_an_unchanged_sync_writes_no_event(role_map):
    user = UserFactory(username="carol")
    assert sync_roles_from_claims(user=user, claims={"groups": ["prod-approvers"]})
    before = AuditEvent.objects.count()
    assert not sync_roles_from_claims(user=user, claims={"groups": ["prod-approvers"]})
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_a_local_grant_with_the_same_scope_is_not_duplicated_nor_removed(role_map):
    user = UserFactory(username="dave")
    role_grant_add(user=user, role="release_manager", project="payments-*")
    sync_roles_from_claims(user=user, claims={"groups": ["payments-release"]})
    sync_roles_from_claims(user=user, claims={"groups": []})
    grant = RoleGrant.objects.get(user=user)
    assert (grant.role, grant.project, grant.source) == ("release_manager", "payments-*", "local")


def test_the_login_page_offers_sso_only_when_enabled(client, settings, db):
    assert b"single sign-on" not in client.get(reverse("login")).content
    settings.OIDC_ENABLED = True
    settings.ROOT_URLCONF = "tests.security.oidc_urls"
    page = client.get(reverse("login")).content.decode()
    assert "Sign in with single sign-on" in page
    assert 'href="/oidc/authenticate/"' in page


# --- the full code flow ---------------------------------------------------------------------------


@pytest.fixture
def provider():
    idp = LocalOIDCProvider()
    idp.start()
    yield idp
    idp.stop()


@pytest.fixture
def sso(settings, provider, role_map):
    for name, value in provider.settings().items():
        setattr(settings, name, value)
    settings.OIDC_USERNAME_CLAIM = "preferred_username"
    settings.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = 900
    settings.ROOT_URLCONF = "tests.security.oidc_api_urls"
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "accounts.oidc.PortalOIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[:-1],
        "accounts.middleware.PortalSessionRefresh",
        settings.MIDDLEWARE[-1],
    ]
    settings.AXES_ENABLED = True
    return provider


def _sign_in(client, provider, claims, *, next_url="/inventory/"):
    start = client.get(f"/oidc/authenticate/?{urlencode({'next': next_url})}")
    assert start.status_code == 302
    query = provider.authorize(start["Location"], claims)
    return client.get(f"/oidc/callback/?{urlencode(query)}")


ALICE = {"sub": "u-1", "preferred_username": "alice", "email": "alice@example.com"}


@pytest.mark.django_db
def test_sign_in_through_the_provider_creates_the_user_with_mapped_roles(client, sso):
    done = _sign_in(client, sso, {**ALICE, "groups": ["payments-release"]})

    assert done.status_code == 302
    assert done["Location"] == "/inventory/"
    user = type(done.wsgi_request.user).objects.get(username="alice")
    assert user.email == "alice@example.com"
    assert not user.has_usable_password()
    assert has_role(user, "release_manager", project="payments-api")
    assert client.get("/inventory/").status_code == 200
    # PKCE and the client secret went to the token endpoint, never to the browser.
    assert sso.token_requests[-1]["code_verifier"]
    assert "s3cret-client" not in done["Location"]
    login = AuditEvent.objects.filter(action="auth.login").order_by("-sequence").first()
    assert login.actor_name == "alice" and "oidc" in login.message


@pytest.mark.django_db
def test_session_refresh_re_derives_roles_and_drops_a_removed_group(client, sso, settings):
    _sign_in(client, sso, {**ALICE, "groups": ["platform-admins", "payments-release"]})
    user = get_user_model().objects.get(username="alice")
    assert has_role(user, "admin")

    # The ID token's lifetime in the portal is over: the next page view refreshes silently.
    session = client.session
    session["oidc_id_token_expiration"] = 0
    session.save()
    htmx = client.get("/inventory/", HTTP_HX_REQUEST="true")
    assert htmx.status_code == 200
    assert htmx["HX-Redirect"].startswith(f"{sso.base_url}/authorize?")
    refresh = client.get("/inventory/")
    assert refresh.status_code == 302
    assert refresh["Location"].startswith(f"{sso.base_url}/authorize?")
    assert "prompt=none" in refresh["Location"]

    query = sso.authorize(refresh["Location"], {**ALICE, "groups": ["payments-release"]})
    back = client.get(f"/oidc/callback/?{urlencode(query)}")
    assert back.status_code == 302 and back["Location"] == "/inventory/"

    user = get_user_model().objects.get(username="alice")
    assert not has_role(user, "admin")
    assert has_role(user, "release_manager", project="payments-api")
    assert client.get("/audit/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"aud": "another-client"}, "id"),
        ({"iss": "https://evil.example"}, "id"),
        ({"nonce": "replayed"}, "id"),
        ({"exp": 1}, "id"),
        ({"sub": "someone-else"}, "userinfo"),
        ({"preferred_username": "../admin"}, "userinfo"),
    ],
)
def test_a_token_that_fails_verification_signs_nobody_in(client, sso, override, where):
    if where == "id":
        sso.id_token_overrides = override
    else:
        sso.userinfo_overrides = override
    done = _sign_in(client, sso, {**ALICE, "groups": ["platform-admins"]})
    assert done.status_code == 302
    assert "sso=failed" in done["Location"]
    assert AuditEvent.objects.filter(action="auth.login_failed").exists()
    assert "_auth_user_id" not in client.session
    assert not get_user_model().objects.filter(username="alice").exists()


@pytest.mark.django_db
def test_a_token_signed_by_another_key_is_refused(client, sso):
    from cryptography.hazmat.primitives.asymmetric import rsa

    real_key = sso.key
    start = client.get("/oidc/authenticate/")
    query = sso.authorize(start["Location"], {**ALICE, "groups": ["platform-admins"]})
    # The provider's JWKS keeps the real public key; the ID token is signed by an attacker's key.
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    original = sso.id_token

    def forged(grant):
        sso.key = attacker
        try:
            return original(grant)
        finally:
            sso.key = real_key

    sso.id_token = forged
    done = client.get(f"/oidc/callback/?{urlencode(query)}")
    assert "sso=failed" in done["Location"]
    assert "Single sign-on did not complete" in client.get(done["Location"]).content.decode()
    assert "_auth_user_id" not in client.session


# --- identity: issuer + subject, never a name ------------------------------------------------------


def _user(username):
    return get_user_model().objects.get(username=username)


@pytest.mark.django_db
def test_a_renamed_user_keeps_their_account_by_subject(client, sso):
    _sign_in(client, sso, {**ALICE, "groups": ["payments-release"]})
    alice = _user("alice")
    client.logout()

    done = _sign_in(
        client, sso, {**ALICE, "preferred_username": "alice.smith", "groups": ["payments-release"]}
    )

    assert done.status_code == 302 and "sso=failed" not in done["Location"]
    assert int(client.session["_auth_user_id"]) == alice.pk
    assert not get_user_model().objects.filter(username="alice.smith").exists()
    identity = OIDCIdentity.objects.get(user=alice)
    assert (identity.issuer, identity.subject) == (sso.base_url, "u-1")


@pytest.mark.django_db
def test_another_subject_with_a_taken_username_is_refused(client, sso):
    _sign_in(client, sso, {**ALICE, "groups": ["platform-admins"]})
    client.logout()

    # The provider handed the name "alice" to someone else (a leaver's name reused).
    done = _sign_in(client, sso, {"sub": "u-2", "preferred_username": "alice", "groups": []})

    assert "sso=failed" in done["Location"]
    assert "_auth_user_id" not in client.session
    assert get_user_model().objects.filter(username="alice").count() == 1
    assert has_role(_user("alice"), "admin")


@pytest.mark.django_db
def test_a_local_account_with_a_password_is_not_taken_over_by_a_matching_username(client, sso):
    local = UserFactory(username="root-local")
    local.set_password("a-long-local-password")
    local.save()
    role_grant_add(user=local, role="admin")

    done = _sign_in(client, sso, {"sub": "u-9", "preferred_username": "root-local", "groups": []})

    assert "sso=failed" in done["Location"]
    assert "_auth_user_id" not in client.session
    assert not OIDCIdentity.objects.exists()


@pytest.mark.django_db
def test_an_sso_account_from_before_identities_is_bound_at_its_next_sign_in(client, sso):
    legacy = UserFactory(username="alice")
    legacy.set_unusable_password()
    legacy.save()

    _sign_in(client, sso, {**ALICE, "groups": ["payments-release"]})

    assert int(client.session["_auth_user_id"]) == legacy.pk
    identity = OIDCIdentity.objects.get(user=legacy)
    assert identity.subject == "u-1" and identity.roles_synced_at is not None
    assert str(identity.refresh_token)  # kept (encrypted at rest) for re-checking API-token use
    event = AuditEvent.objects.get(action="auth.identity_linked")
    assert event.target_id == str(legacy.pk) and event.after == {"issuer": sso.base_url, "subject": "u-1"}


# --- offboarding reaches API tokens and session API calls -------------------------------------------


def _signed_in_admin_with_token(client, sso):
    _sign_in(client, sso, {**ALICE, "groups": ["platform-admins", "payments-release"]})
    alice = _user("alice")
    _token, raw = api_token_create(user=alice, name="ci")
    return alice, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def _roles_go_stale(user):
    OIDCIdentity.objects.filter(user=user).update(roles_synced_at=timezone.now() - timedelta(hours=1))


@pytest.mark.django_db
def test_an_api_token_loses_sso_roles_when_the_provider_no_longer_knows_the_user(client, sso):
    alice, bearer = _signed_in_admin_with_token(client, sso)
    api = Client()
    assert api.get(PROBE, **bearer).status_code == 200

    sso.forget("u-1")
    assert api.get(PROBE, **bearer).status_code == 200  # within the refresh interval nothing is asked
    _roles_go_stale(alice)
    response = api.get(PROBE, **bearer)

    assert response.status_code == 403
    assert not RoleGrant.objects.filter(user=alice, source="oidc").exists()
    assert not has_role(_user("alice"), "admin")
    event = AuditEvent.objects.filter(action="role.synced").order_by("-sequence").first()
    assert event.actor_name == "system:oidc" and "no longer vouches" in event.message
    assert event.after == {"grants": []}


@pytest.mark.django_db
def test_an_api_token_follows_a_group_change_at_the_provider(client, sso):
    alice, bearer = _signed_in_admin_with_token(client, sso)
    old_refresh = str(OIDCIdentity.objects.get(user=alice).refresh_token)
    sso.set_claims("u-1", groups=["payments-release"])
    _roles_go_stale(alice)

    Client().get(PROBE, **bearer)

    alice = _user("alice")
    assert not has_role(alice, "admin")
    assert has_role(alice, "release_manager", project="payments-api")
    identity = OIDCIdentity.objects.get(user=alice)
    assert str(identity.refresh_token) not in ("", old_refresh)  # the rotated one is kept
    assert (timezone.now() - identity.roles_synced_at) < timedelta(minutes=1)
    assert sso.token_requests[-1]["grant_type"] == "refresh_token"


@pytest.mark.django_db
def test_an_unreachable_provider_fails_token_requests_closed(client, sso):
    alice, bearer = _signed_in_admin_with_token(client, sso)
    _roles_go_stale(alice)
    sso.stop()

    response = Client().get(PROBE, **bearer)

    assert response.status_code == 503
    assert "identity provider" in response.json()["error"]


@pytest.mark.django_db
def test_an_api_token_of_a_legacy_sso_user_without_identity_loses_its_sso_roles(sso):
    legacy = UserFactory(username="old-sso")
    sync_roles_from_claims(user=legacy, claims={"groups": ["platform-admins"]})
    _token, raw = api_token_create(user=legacy)

    response = Client().get(PROBE, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 403
    assert not RoleGrant.objects.filter(user=legacy, source="oidc").exists()


@pytest.mark.django_db
def test_a_session_api_call_past_the_id_token_lifetime_is_refused_until_a_refresh(client, sso):
    _sign_in(client, sso, {**ALICE, "groups": ["platform-admins"]})
    assert client.get(PROBE).status_code == 200
    session = client.session
    session["oidc_id_token_expiration"] = 0
    session.save()

    for response in (client.get(PROBE), client.post(PROBE, "{}", content_type="application/json")):
        assert response.status_code == 401
        assert "reload" in response.json()["error"]
