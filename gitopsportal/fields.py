"""Moved to core.fields."""

# transitional: removed once lifecycle/rooms/auditsink have merged
from core.fields import EncryptedTextField, SecretStr, fernet  # noqa: F401
