"""Key rotation: AUDIT_VERIFY_PUBLIC_KEYS(_FILE) keeps checkpoints of earlier signing keys verifying."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import signing
from audit.services import audit_checkpoint_create, audit_event_record
from audit.verify import audit_chain_verify

ROOT = Path(__file__).resolve().parents[2]


def _private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def fresh_signing_key():
    signing.signing_key.cache_clear()
    yield
    signing.signing_key.cache_clear()


@pytest.mark.django_db
def test_checkpoints_of_a_rotated_key_verify_with_its_public_key_listed(settings, fresh_signing_key):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    settings.AUDIT_SIGNING_KEY = _private_pem(old)
    audit_event_record(action="promotion.requested", message="before the rotation")
    assert audit_checkpoint_create() is not None

    settings.AUDIT_SIGNING_KEY = _private_pem(new)  # the rotation
    signing.signing_key.cache_clear()
    audit_event_record(action="promotion.requested", message="after the rotation")
    assert audit_checkpoint_create() is not None

    settings.AUDIT_VERIFY_PUBLIC_KEYS = []
    assert not audit_chain_verify().ok  # the old checkpoint's key is unknown

    settings.AUDIT_VERIFY_PUBLIC_KEYS = [_public_pem(old)]
    report = audit_chain_verify()
    assert report.ok, report.problems
    assert report.checkpoints == 2


def _settings_in_a_process(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "from django.conf import settings; "
        "keys = settings.AUDIT_VERIFY_PUBLIC_KEYS; print(len(keys), all(k.startswith('-----BEGIN') for k in keys))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_VERIFY_PUBLIC_KEYS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "gitopsportal.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_setting_reads_concatenated_pem_keys_from_the_variable_or_a_file(tmp_path):
    keys = _public_pem(Ed25519PrivateKey.generate()) + _public_pem(Ed25519PrivateKey.generate())
    unset = _settings_in_a_process({})
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.split() == ["0", "True"]

    inline = _settings_in_a_process({"AUDIT_VERIFY_PUBLIC_KEYS": keys.replace("\n", "\\n")})
    assert inline.returncode == 0, inline.stderr
    assert inline.stdout.split() == ["2", "True"]

    path = tmp_path / "previous-keys.pem"
    path.write_text(keys)
    from_file = _settings_in_a_process({"AUDIT_VERIFY_PUBLIC_KEYS_FILE": str(path)})
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.split() == ["2", "True"]


def test_a_value_that_is_not_an_ed25519_public_key_stops_start_up():
    garbage = _settings_in_a_process({"AUDIT_VERIFY_PUBLIC_KEYS": "not a key"})
    assert garbage.returncode != 0
    assert "AUDIT_VERIFY_PUBLIC_KEYS: no PEM public key" in garbage.stderr
    private = _private_pem(Ed25519PrivateKey.generate()).replace("PRIVATE", "PUBLIC")
    wrong = _settings_in_a_process({"AUDIT_VERIFY_PUBLIC_KEYS": private})
    assert wrong.returncode != 0
    assert "AUDIT_VERIFY_PUBLIC_KEYS: key #1 is not an Ed25519 public key" in wrong.stderr
