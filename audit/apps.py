from django.apps import AppConfig
from django.conf import settings
from django.db import connections, transaction
from django.db.models.signals import post_migrate

from .dbroles import ledger_protect, runtime_role_grant


def _protect_ledger_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """Re-install the ledger's triggers and the runtime role's grants after every migrate.

    SQLite drops a table's triggers when a migration rebuilds it, and tables created by later
    migrations need the runtime role's grants (audit.dbroles).
    """
    connection = connections[using]
    with transaction.atomic(using=using):
        ledger_protect(connection=connection)
        runtime_role_grant(connection=connection, role=settings.DATABASE_RUNTIME_USER)


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        post_migrate.connect(_protect_ledger_after_migrate, sender=self, dispatch_uid="audit_protect_ledger")
