"""A text field encrypted at rest with the portal's Fernet keys (MultiFernet: newest key first)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    """Return the MultiFernet of the configured keys (the first one encrypts, all of them decrypt)."""
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


class SecretStr(str):
    """A decrypted secret whose repr never shows it."""

    def __repr__(self) -> str:
        return "SecretStr('****')"

    @property
    def masked(self) -> str:
        return f"…{self[-4:]}" if len(self) >= 8 else "****"


# Django's fields are generic in django-stubs only: subscripting TextField would fail at run time.
class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """Store a secret as a Fernet token; read it back as a SecretStr."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        try:
            return SecretStr(fernet().decrypt(value.encode()).decode())
        except InvalidToken:
            # Never echo ciphertext or plaintext; a wrong key must be fixed in configuration.
            raise ValueError(
                f"cannot decrypt {self.model.__name__}.{self.name}: check GITOPSPORTAL_ENCRYPTION_KEYS"
            ) from None

    def get_prep_value(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        return fernet().encrypt(str(value).encode()).decode()

    def to_python(self, value: Any) -> Any:
        return value
