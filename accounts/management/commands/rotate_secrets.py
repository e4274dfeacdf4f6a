"""Re-encrypt every secret at rest with the newest key of GITOPSPORTAL_ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction
from django.db.models import Field

from audit.services import audit_event_record
from core.fields import EncryptedTextField, fernet


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Return (model, field) for every EncryptedTextField of every installed model."""
    found = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                found.append((model, field))
    return found


def _quoted_column(field: Field[Any, Any] | None) -> str:
    """Quote a concrete field's column (set once models load; the stubs allow None before that)."""
    assert field is not None and field.column is not None
    return connection.ops.quote_name(field.column)


def _raw_rows(model: type[models.Model], field: EncryptedTextField, *, lock: bool) -> list[tuple[Any, str]]:
    """Read ciphertexts as stored (bypassing decryption), optionally locking the rows."""
    table = connection.ops.quote_name(model._meta.db_table)
    column = _quoted_column(field)
    pk = _quoted_column(model._meta.pk)
    sql = f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} <> ''"  # noqa: S608 - identifiers quoted
    if lock and connection.vendor == "postgresql":
        sql += " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field (Argo CD and forge tokens, webhook secrets) with the first key of "
        "GITOPSPORTAL_ENCRYPTION_KEYS. Put the new key first, keep the old ones after it, run this, then "
        "`rotate_secrets --verify` and drop the old keys."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--verify",
            action="store_true",
            help="change nothing; fail unless every value decrypts with the first key alone",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        fields = encrypted_fields()
        if opts["verify"]:
            self._verify(fields)
            return
        rotator = fernet()
        counts: dict[str, int] = {}
        with transaction.atomic():
            for model, field in fields:
                label = f"{model._meta.label}.{field.name}"
                rows = _raw_rows(model, field, lock=True)
                table = connection.ops.quote_name(model._meta.db_table)
                column = _quoted_column(field)
                pk = _quoted_column(model._meta.pk)
                with connection.cursor() as cursor:
                    for row_pk, ciphertext in rows:
                        try:
                            rotated = rotator.rotate(ciphertext.encode()).decode()
                        except InvalidToken:
                            raise CommandError(
                                f"{label} of row {row_pk} decrypts with none of GITOPSPORTAL_ENCRYPTION_KEYS; "
                                "nothing was changed"
                            ) from None
                        cursor.execute(
                            f"UPDATE {table} SET {column} = %s WHERE {pk} = %s",  # noqa: S608 - identifiers quoted
                            [rotated, row_pk],
                        )
                counts[label] = len(rows)
            audit_event_record(
                action="secrets.rotated",
                system_name="manage.py",
                target_type="encryption_keys",
                target_label=f"{len(settings.ENCRYPTION_KEYS)} key(s) configured",
                after={"reencrypted": [[label, count] for label, count in counts.items()]},
                message=f"re-encrypted {sum(counts.values())} secret(s) with the newest key",
            )
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} re-encrypted")
        self.stdout.write(f"done: {sum(counts.values())} secret(s) now use the first key")

    def _verify(self, fields) -> None:
        primary = Fernet(settings.ENCRYPTION_KEYS[0].encode())
        stale = []
        for model, field in fields:
            for row_pk, ciphertext in _raw_rows(model, field, lock=False):
                try:
                    primary.decrypt(ciphertext.encode())
                except InvalidToken:
                    stale.append(f"{model._meta.label}.{field.name} row {row_pk}")
        if stale:
            raise CommandError(f"{len(stale)} secret(s) not under the first key: {', '.join(stale[:20])}")
        self.stdout.write("ok: every secret decrypts with the first key; older keys may be removed")
