"""Web hardening: CSP with nonces and no unsafe-*, no inline code in pages, security headers,
HSTS and secure cookies in production, and `check --deploy` clean."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.urls import reverse

from tests.factories import user_with_role

from .htmlcheck import csp_nonce, inline_code_problems

ROOT = Path(__file__).resolve().parents[2]


def production_env(**extra: str) -> dict[str, str]:
    """A complete production environment (nothing from the developer's shell leaks in)."""
    signing_key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    return {
        **keep,
        "GITOPSPORTAL_ENV": "production",
        "SECRET_KEY": "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#%^&*(-_=+)")
            for _ in range(64)
        ),
        "DATABASE_URL": "postgres://portal:pw@db.internal:5432/portal",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "GITOPSPORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_SIGNING_KEY": signing_key.decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
        **extra,
    }


def test_check_deploy_passes_with_no_warning_in_production():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_with_oidc_enabled_in_production():
    oidc = {
        "OIDC_ENABLED": "true",
        "OIDC_RP_CLIENT_ID": "portal",
        "OIDC_RP_CLIENT_SECRET": "s",
        "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://idp.example/auth",
        "OIDC_OP_TOKEN_ENDPOINT": "https://idp.example/token",
        "OIDC_OP_USER_ENDPOINT": "https://idp.example/userinfo",
        "OIDC_OP_JWKS_ENDPOINT": "https://idp.example/jwks",
        "OIDC_ROLE_MAP": "platform-admins=admin,prod-approvers=approver:*:prod",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(**oidc),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plain_http = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=production_env(**{**oidc, "OIDC_OP_TOKEN_ENDPOINT": "http://idp.example/token"}),
    )
    assert (
        plain_http.returncode != 0 and "OIDC_OP_TOKEN_ENDPOINT: must be an https:// URL" in plain_http.stderr
    )


def test_production_turns_on_hsts_secure_cookies_and_https_redirect():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_HTTPONLY, s.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**production_env(), "DJANGO_SETTINGS_MODULE": "gitopsportal.settings"},
    )
    assert result.stdout.split() == ["31536000", "True", "True", "True", "True", "True", "False"], (
        result.stderr
    )


@pytest.mark.django_db
@pytest.mark.parametrize("who", [None, "admin", "viewer"])
def test_pages_send_a_strict_csp_with_a_nonce_and_contain_no_inline_code(client, who):
    if who:
        client.force_login(user_with_role(who, username=f"csp-{who}"))
    urls = (
        [reverse("login")]
        if who is None
        else [
            reverse("inventory:matrix"),
            reverse("promotions:list"),
            reverse("rollbacks:list"),
            reverse("accounts:tokens"),
        ]
    )
    if who == "admin":
        urls.append(reverse("audit:event_list"))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "default-src 'self'" in policy and "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy and "base-uri 'none'" in policy
        nonce = csp_nonce(policy)
        assert nonce and len(nonce) >= 16, policy
        html = response.content.decode()
        assert inline_code_problems(html, nonce=nonce) == [], url
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_each_response_gets_a_fresh_nonce(client):
    first = csp_nonce(client.get(reverse("login"))["Content-Security-Policy"])
    second = csp_nonce(client.get(reverse("login"))["Content-Security-Policy"])
    assert first != second


def test_the_inline_code_scanner_catches_what_csp_would_block():
    page = (
        '<div style="x"></div><a href="javascript:alert(1)">x</a><img src=x onerror="alert(1)">'
        '<script>alert(1)</script><script src="/static/a.js"></script><style>p{}</style>'
    )
    problems = inline_code_problems(page, nonce="abc")
    assert len(problems) == 8, problems


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_http_only_and_same_site(client):
    user_with_role("viewer", username="cookie-user")
    response = client.post(reverse("login"), {"username": "cookie-user", "password": "demo-pass-1234"})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


@pytest.mark.django_db
def test_htmx_posts_without_a_csrf_token_are_refused(client):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user_with_role("viewer", username="csrf-user"))
    response = strict.post(
        reverse("accounts:token_create"), {"name": "x", "expires_in_days": "30"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 403
