"""Secrets at rest: encrypted in the database, rotated by `manage.py rotate_secrets`, never in
logs, reprs, exceptions or audit payloads; *_FILE variables work."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent
from audit.services import audit_event_record
from core.fields import EncryptedTextField, SecretStr
from inventory.models import ArgoInstance, GitRepository

ROOT = Path(__file__).resolve().parents[2]
ARGO_TOKEN = "argo-Secret-Token-0123456789"
FORGE_TOKEN = "ghp_forgeSecretToken9876543210"
HOOK_SECRET = "whsec-Webhook-Secret-5555"


def _raw(model, pk, column) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.fixture
def stored(db):
    argo = ArgoInstance.objects.create(name="prod-argo", url="https://argo.example", token=ARGO_TOKEN)
    repo = GitRepository.objects.create(
        name="gitops",
        url="https://git.example/acme/gitops.git",
        full_name="acme/gitops",
        token=FORGE_TOKEN,
        webhook_secret=HOOK_SECRET,
    )
    return argo, repo


def test_the_database_holds_ciphertext_not_the_token(stored):
    argo, repo = stored
    for model, pk, column, secret in (
        (ArgoInstance, argo.pk, "token", ARGO_TOKEN),
        (GitRepository, repo.pk, "token", FORGE_TOKEN),
        (GitRepository, repo.pk, "webhook_secret", HOOK_SECRET),
    ):
        raw = _raw(model, pk, column)
        assert raw.startswith("gAAAAA"), "a Fernet token"
        assert secret not in raw
    assert ArgoInstance.objects.get(pk=argo.pk).token == ARGO_TOKEN


def test_secrets_never_show_in_repr_str_or_masked_output(stored):
    argo = ArgoInstance.objects.get(pk=stored[0].pk)
    assert isinstance(argo.token, SecretStr)
    for text in (repr(argo.token), repr(argo), str(argo), repr(vars(argo)), argo.token.masked):
        assert ARGO_TOKEN not in text
    assert argo.token.masked == "…6789"


def test_a_new_key_first_then_rotate_secrets_re_encrypts_everything(stored, settings):
    argo, repo = stored
    old_key = settings.ENCRYPTION_KEYS[0]
    before = _raw(ArgoInstance, argo.pk, "token")
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]

    # Old ciphertext still reads; --verify says it is not yet under the new key.
    assert ArgoInstance.objects.get(pk=argo.pk).token == ARGO_TOKEN
    with pytest.raises(CommandError, match="not under the first key"):
        call_command("rotate_secrets", "--verify")

    call_command("rotate_secrets")

    after = _raw(ArgoInstance, argo.pk, "token")
    assert after != before
    assert Fernet(new_key.encode()).decrypt(after.encode()).decode() == ARGO_TOKEN
    assert (
        Fernet(new_key.encode()).decrypt(_raw(GitRepository, repo.pk, "webhook_secret").encode())
        == HOOK_SECRET.encode()
    )
    call_command("rotate_secrets", "--verify")
    # The old key can go now.
    settings.ENCRYPTION_KEYS = [new_key]
    assert GitRepository.objects.get(pk=repo.pk).token == FORGE_TOKEN
    event = AuditEvent.objects.get(action="secrets.rotated")
    assert ["inventory.ArgoInstance.token", 1] in event.after["reencrypted"]
    assert ARGO_TOKEN not in str(event.after) and new_key not in str(event.after)


def test_rotation_with_a_missing_key_changes_nothing(stored, settings):
    argo, _ = stored
    before = _raw(ArgoInstance, argo.pk, "token")
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key was dropped too early
    with pytest.raises(CommandError, match="decrypts with none"):
        call_command("rotate_secrets")
    assert _raw(ArgoInstance, argo.pk, "token") == before
    with pytest.raises(ValueError, match="check GITOPSPORTAL_ENCRYPTION_KEYS") as info:
        ArgoInstance.objects.get(pk=argo.pk)
    assert before not in str(info.value)


def test_every_encrypted_field_is_covered_by_rotation():
    from accounts.management.commands.rotate_secrets import encrypted_fields

    labels = {f"{m._meta.label}.{f.name}" for m, f in encrypted_fields()}
    assert {
        "inventory.ArgoInstance.token",
        "inventory.GitRepository.token",
        "inventory.GitRepository.webhook_secret",
    } <= labels
    assert all(isinstance(f, EncryptedTextField) for _, f in encrypted_fields())


def test_audit_payloads_redact_credentials(db):
    event = audit_event_record(
        action="inventory.config_applied",
        before={"token": ARGO_TOKEN, "url": "https://a"},
        after={"nested": {"webhook_secret": HOOK_SECRET, "api_key": "k-123456"}, "Authorization": "Bearer x"},
    )
    text = f"{event.before} {event.after}"
    assert (
        ARGO_TOKEN not in text
        and HOOK_SECRET not in text
        and "k-123456" not in text
        and "Bearer x" not in text
    )
    assert event.before["url"] == "https://a"


class _ArgoStub:
    """A loopback Argo CD /api/version that accepts one token and, when hostile, echoes the header."""

    def __init__(self, token: str, *, echo: bool) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                if auth == f"Bearer {stub.token}":
                    status, body = 200, {"Version": "v2.14.0"}
                else:
                    status, body = (
                        401,
                        {"message": f"invalid session: {auth if stub.echo else ''}", "code": 16},
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.token, self.echo = token, echo
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tokens_never_reach_logs_or_exceptions_when_talking_to_argo_cd(stored, caplog):
    from integrations.argocd import ArgoCDAuthError, ArgoCDClient

    stub = _ArgoStub(ARGO_TOKEN, echo=False)
    caplog.set_level(logging.DEBUG)
    try:
        good = ArgoCDClient(stub.url, ArgoInstance.objects.get(pk=stored[0].pk).token, allow_http=True)
        assert good.version().version == "v2.14.0"
        wrong = "wrong-" + ARGO_TOKEN
        bad = ArgoCDClient(stub.url, wrong, allow_http=True)
        with pytest.raises(ArgoCDAuthError) as info:
            bad.version()
    finally:
        stub.stop()
    for text in (caplog.text, str(info.value), repr(info.value), repr(good), repr(bad), repr(vars(good))):
        assert ARGO_TOKEN not in text


def test_a_server_echoing_the_token_does_not_put_it_in_exceptions(caplog):
    from integrations.argocd import ArgoCDAuthError, ArgoCDClient

    stub = _ArgoStub("the-right-one", echo=True)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ArgoCDAuthError) as info:
            ArgoCDClient(stub.url, ARGO_TOKEN, allow_http=True).version()
    finally:
        stub.stop()
    assert ARGO_TOKEN not in str(info.value)
    assert ARGO_TOKEN not in caplog.text


def _settings_probe(expression: str, **env: str) -> subprocess.CompletedProcess:
    code = f"import django; django.setup(); from django.conf import settings as s; print({expression})"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECRET_KEY", "GITOPSPORTAL_ENCRYPTION", "OIDC_"))
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": "gitopsportal.settings", **env},
    )


def test_secrets_can_come_from_files(tmp_path):
    key = Fernet.generate_key().decode()
    files = {
        "SECRET_KEY": "k" * 64,
        "GITOPSPORTAL_ENCRYPTION_KEYS": f"{key},{Fernet.generate_key().decode()}\n",
        "OIDC_RP_CLIENT_SECRET": "client-secret-from-file\n",
    }
    env = {}
    for name, content in files.items():
        path = tmp_path / name.lower()
        path.write_text(content)
        env[f"{name}_FILE"] = str(path)
    result = _settings_probe(
        "s.SECRET_KEY == 'k' * 64, s.ENCRYPTION_KEYS[0] == "
        + repr(key)
        + ", len(s.ENCRYPTION_KEYS), s.OIDC_RP_CLIENT_SECRET == 'client-secret-from-file'",
        **env,
    )
    assert result.stdout.strip() == "True True 2 True", result.stderr[-2000:]


def test_an_unreadable_secret_file_or_a_bad_key_stops_start_up(tmp_path):
    missing = _settings_probe("1", SECRET_KEY_FILE=str(tmp_path / "nope"))
    assert missing.returncode != 0 and "SECRET_KEY_FILE" in missing.stderr
    bad = _settings_probe("1", GITOPSPORTAL_ENCRYPTION_KEYS="not-a-fernet-key")
    assert bad.returncode != 0 and "GITOPSPORTAL_ENCRYPTION_KEYS: key #1" in bad.stderr
    assert "not-a-fernet-key" not in bad.stderr
