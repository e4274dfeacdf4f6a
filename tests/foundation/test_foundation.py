"""The skeleton works on the real stack: PostgreSQL, Redis, a real Celery worker, config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from gitopsportal.models import WorkerHeartbeat
from tests.factories import user_with_role

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_suite_talks_to_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


def test_a_real_worker_on_redis_runs_a_task_end_to_end(celery_worker_process):
    from django.conf import settings

    from gitopsportal.tasks import worker_heartbeat

    assert settings.CELERY_BROKER_URL.startswith("redis://")
    result = worker_heartbeat.delay()
    hostname = result.get(timeout=30)
    assert hostname.startswith("test-")
    assert WorkerHeartbeat.objects.filter(hostname=hostname).exists()


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://nope"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://host:notaport/db"}, "DATABASE_URL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        (
            {
                "GITOPSPORTAL_ENV": "production",
                "DATABASE_URL": "postgres://x@127.0.0.1/db",
                "REDIS_URL": "redis://127.0.0.1:6379/0",
            },
            "SECRET_KEY",
        ),
        ({"GITOPSPORTAL_ENV": "production", "DEBUG": "true"}, "DEBUG"),
        (
            {
                "GITOPSPORTAL_ENV": "production",
                "SECRET_KEY": "x" * 60,
                "DATABASE_URL": "postgres://x@127.0.0.1/db",
            },
            "REDIS_URL",
        ),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"ARGOCD_READ_TIMEOUT_SECONDS": "soon"}, "ARGOCD_READ_TIMEOUT_SECONDS"),
        ({"ARGOCD_CONNECT_TIMEOUT_SECONDS": "0"}, "ARGOCD_CONNECT_TIMEOUT_SECONDS"),
        ({"POLL_TIMEOUT_SECONDS": "0"}, "POLL_TIMEOUT_SECONDS"),
        ({"PROMOTION_PR_LEASE_SECONDS": "60"}, "PROMOTION_PR_LEASE_SECONDS"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line_naming_the_variable(env, variable):
    result = _manage("check", **env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.django_db
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_names_the_broker_when_it_is_down():
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": os.environ["DATABASE_URL"]}
    code = (
        "import django,json;django.setup();from django.test import Client;"
        "r=Client().get('/readyz');print(r.status_code, json.dumps(r.json()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "gitopsportal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith("503"), result.stderr[-2000:]
    assert '"broker": "failed"' in result.stdout
    # What failed, not how: no driver message, host or port for an anonymous caller.
    assert '"errors"' not in result.stdout and "127.0.0.1" not in result.stdout
    assert "Error" not in result.stdout


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(reverse("inventory:matrix"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]
    login_page = client.get(reverse("login"))
    assert b"Sign in" in login_page.content


@pytest.mark.django_db
def test_a_signed_in_viewer_sees_the_layout_with_navigation_and_role(client):
    user = user_with_role("viewer")
    client.force_login(user)
    page = client.get(reverse("inventory:matrix")).content.decode()
    for label in ("What runs where", "Promotions", "Rollbacks"):
        assert label in page
    assert ">viewer<" in page
    assert "vendor/htmx.min.js" in page
    assert '"X-CSRFToken"' in page  # every htmx request carries the CSRF token
    assert "Audit</a>" not in page  # viewers do not see the audit trail


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abcdef0123456789")
    assert response["X-Request-ID"] == "abcdef0123456789"
    assert len(client.get("/healthz", HTTP_X_REQUEST_ID="bad id!")["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_createuser_and_create_api_token_commands(capsys):
    from django.core.management import call_command

    from accounts.models import ApiToken
    from audit.models import AuditEvent

    call_command("createuser", "robot", "--role", "release_manager")
    call_command("create_api_token", "robot")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert raw.startswith("gpp_")
    token = ApiToken.objects.get()
    assert token.token_hash != raw and raw not in token.token_hash
    actions = list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True))
    assert actions == ["role.granted", "user.created", "token.created"]
