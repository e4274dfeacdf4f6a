"""Offline verification trusts a pinned key, never the key a bundle carries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from audit.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    checkpoint_payload,
    public_key_fingerprint,
    public_key_id,
    public_key_pem,
    sign,
    verify_bundle,
)
from audit.services import audit_event_record
from audit.signing import current_public_key_pem, public_key
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def _bundle(tmp_path) -> str:
    for i in range(3):
        audit_event_record(action="promotion.merged", message=f"merge {i}")
    out = tmp_path / "bundle.zip"
    call_command("audit_export", "--format", "bundle", "--out", str(out))
    return str(out)


def _resign(path: str) -> Ed25519PrivateKey:
    """Re-sign the manifest and its checkpoint with a key of one's own (what a forger would do).

    A forger would also rewrite and re-chain the events first; a self-consistent bundle under a
    foreign key is what must not verify.
    """
    forger = Ed25519PrivateKey.generate()
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members[MANIFEST_FILE])
    key_id = public_key_id(forger.public_key())
    manifest.update(public_key=public_key_pem(forger.public_key()), public_key_id=key_id)
    checkpoint = {**manifest["checkpoint"], "public_key_id": key_id}
    checkpoint["signature"] = sign(forger, checkpoint_payload(checkpoint))
    manifest["checkpoint"] = checkpoint
    members[MANIFEST_FILE] = json.dumps(manifest).encode()
    members[SIGNATURE_FILE] = sign(forger, members[MANIFEST_FILE]).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return forger


def test_a_bundle_without_a_pinned_key_does_not_verify(tmp_path):
    path = _bundle(tmp_path)
    report = verify_bundle(path)
    assert not report.ok
    assert "no pinned public key" in str(report.first_problem)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    offline = subprocess.run(
        [sys.executable, "-m", "audit.bundle", path],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 1 and "no pinned public key" in offline.stderr


def test_a_bundle_re_signed_with_another_key_fails_every_pin(tmp_path):
    path = _bundle(tmp_path)
    fingerprint = public_key_fingerprint(public_key())
    assert verify_bundle(path, key_fingerprint=fingerprint).ok
    forger = _resign(path)
    # Verified against the key it carries, it would pass: that is what pinning prevents.
    assert verify_bundle(path, key_fingerprint=public_key_fingerprint(forger.public_key())).ok
    assert not verify_bundle(path, key_fingerprint=fingerprint).ok
    assert not verify_bundle(path, public_key_pem_text=current_public_key_pem()).ok
    with pytest.raises(CommandError, match="does not know"):
        call_command("audit_verify", path)  # pinned to this installation's keys
    with pytest.raises(CommandError, match="not the pinned"):
        call_command("audit_verify", path, "--key-fingerprint", fingerprint)


def test_the_fingerprint_printed_at_checkpoint_time_pins_the_key(tmp_path, capsys):
    path = _bundle(tmp_path)
    call_command("audit_checkpoint")
    printed = capsys.readouterr().out
    fingerprint = printed.split("public key fingerprint (sha256): ", 1)[1].split()[0]
    assert fingerprint == public_key_fingerprint(public_key())
    call_command("audit_verify", path, "--key-fingerprint", fingerprint)
    # The short key id is not a fingerprint: 64 bits are too few to pin a key by.
    with pytest.raises(CommandError, match="64 hex digits"):
        call_command("audit_verify", path, "--key-fingerprint", fingerprint[:16])
