"""The Ed25519 key that signs audit checkpoints and export bundles.

Production: ``AUDIT_SIGNING_KEY`` (PEM, PKCS#8; or ``AUDIT_SIGNING_KEY_FILE``). Development, when
unset: a key generated once under ``VAR_DIR/audit-signing-key.pem`` (mode 0600).
Extra public keys that verify older checkpoints after a rotation: ``settings.AUDIT_VERIFY_PUBLIC_KEYS``
(a list of PEM strings), optional.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .bundle import load_private_key, load_public_key, public_key_id, public_key_pem

DEV_KEY_NAME = "audit-signing-key.pem"


def _development_key_path() -> Path:
    return Path(settings.VAR_DIR) / DEV_KEY_NAME


def _load_or_create_development_key() -> Ed25519PrivateKey:
    path = _development_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: two processes starting at once never overwrite each other's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
    return load_private_key(path.read_bytes())


@functools.cache
def signing_key() -> Ed25519PrivateKey:
    """Return the private key from settings, or the development key."""
    pem = settings.AUDIT_SIGNING_KEY
    if pem:
        try:
            return load_private_key(pem.replace("\\n", "\n"))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"AUDIT_SIGNING_KEY: not an Ed25519 private key in PEM ({exc})"
            ) from None
    if settings.PRODUCTION:
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY: required in production")
    return _load_or_create_development_key()


def public_key() -> Ed25519PublicKey:
    return signing_key().public_key()


def current_key_id() -> str:
    return public_key_id(public_key())


def current_public_key_pem() -> str:
    return public_key_pem(public_key())


def verification_keys() -> dict[str, Ed25519PublicKey]:
    """Return every key that may have signed a checkpoint, by key id."""
    keys = {current_key_id(): public_key()}
    for pem in settings.AUDIT_VERIFY_PUBLIC_KEYS:
        key = load_public_key(pem)
        keys[public_key_id(key)] = key
    return keys
