"""Keep the ledger out of reach of the credentials the portal runs with.

Two database roles (docs/security.md, "Evidence that outlives the credentials it runs with"):

- the **owner** (``DATABASE_MIGRATE_URL``) runs ``manage.py migrate``, owns every table and the
  append-only triggers;
- the **runtime** role (``DATABASE_URL``) runs the web, the workers and beat. It gets full DML on
  every table except the ledger (``audit_auditevent``) and its checkpoints
  (``audit_auditcheckpoint``), where it may only INSERT and SELECT. Not owning them, it cannot
  ``ALTER TABLE … DISABLE TRIGGER``, ``DROP TRIGGER`` or ``TRUNCATE`` either.

:func:`ledger_protect` installs the triggers that refuse UPDATE and DELETE (and TRUNCATE) on both
tables, on PostgreSQL and on SQLite; :func:`runtime_role_grant` grants the runtime role. Both are
idempotent: a migration calls them once and ``post_migrate`` again after every ``migrate``, because
SQLite drops a table's triggers whenever a migration rebuilds the table, and tables created by
later migrations need the runtime role's grants.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import BaseDatabaseWrapper

LEDGER_TABLES: tuple[str, ...] = ("audit_auditevent", "audit_auditcheckpoint")

# PostgreSQL: one function for both tables; the error names the table and the operation.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""
# The ledger's original triggers (migration 0002) keep their names and function; the checkpoints
# table gets the same pair.
_PG_TRIGGERS = {
    "audit_auditcheckpoint": (
        "audit_checkpoint_no_update_delete",
        "audit_checkpoint_no_truncate",
        "audit_refuse_change",
    ),
}


def _pg_trigger_exists(cursor, table: str, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)", [name, table])
    return cursor.fetchone() is not None


def ledger_protect(*, connection: BaseDatabaseWrapper) -> None:
    """Install the triggers that refuse UPDATE, DELETE and TRUNCATE on the ledger and checkpoints."""
    existing = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_FUNCTION)
            for table, (row_trigger, truncate_trigger, function) in _PG_TRIGGERS.items():
                if table not in existing:
                    continue
                if not _pg_trigger_exists(cursor, table, row_trigger):
                    cursor.execute(
                        f"CREATE TRIGGER {row_trigger} BEFORE UPDATE OR DELETE ON {table} "
                        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
                    )
                if not _pg_trigger_exists(cursor, table, truncate_trigger):
                    cursor.execute(
                        f"CREATE TRIGGER {truncate_trigger} BEFORE TRUNCATE ON {table} "
                        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
                    )
        elif connection.vendor == "sqlite":
            # SQLite has no TRUNCATE: `DELETE FROM t` without WHERE fires the DELETE trigger too.
            for table in (t for t in LEDGER_TABLES if t in existing):
                for operation in ("UPDATE", "DELETE"):
                    cursor.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} "
                        f"BEFORE {operation} ON {table} BEGIN "
                        f"SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
                    )


def ledger_unprotect(*, connection: BaseDatabaseWrapper) -> None:
    """Remove what :func:`ledger_protect` added (the migration's reverse)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table, (row_trigger, truncate_trigger, _function) in _PG_TRIGGERS.items():
                cursor.execute(f"DROP TRIGGER IF EXISTS {row_trigger} ON {table}")
                cursor.execute(f"DROP TRIGGER IF EXISTS {truncate_trigger} ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")
        elif connection.vendor == "sqlite":
            for table in LEDGER_TABLES:
                for operation in ("update", "delete"):
                    cursor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")


def runtime_role_grant(*, connection: BaseDatabaseWrapper, role: str) -> bool:
    """Grant the runtime role DML on every table and only INSERT/SELECT on the ledger tables.

    A no-op (False) on SQLite, without a role, or when the role is the one migrating (no
    separation configured). Refuses (ImproperlyConfigured) a runtime role that does not exist, is a
    superuser, or owns tables: each would leave the ledger within its reach.
    """
    if connection.vendor != "postgresql" or not role:
        return False
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_schema()")
        owner, schema = cursor.fetchone()
        if role == owner:
            return False
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None:
            raise ImproperlyConfigured(
                f"DATABASE_URL: the runtime role {role!r} does not exist; create it first "
                "(CREATE ROLE … LOGIN PASSWORD …; see deploy/postgres/init-runtime-role.sh)"
            )
        if row[0]:
            raise ImproperlyConfigured(
                f"DATABASE_URL: the runtime role {role!r} is a superuser and bypasses every grant"
            )
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tableowner = %s", [schema, role]
        )
        if cursor.fetchone()[0]:
            raise ImproperlyConfigured(
                f"DATABASE_URL: the runtime role {role!r} owns tables in schema {schema!r}; hand them to "
                f"the owner first (as a superuser: REASSIGN OWNED BY {role} TO {owner})"
            )
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", [schema])
        tables = [name for (name,) in cursor.fetchall()]
        grantee, in_schema = quote(role), quote(schema)
        ledger = ", ".join(quote(table) for table in LEDGER_TABLES if table in tables)
        other = ", ".join(quote(table) for table in tables if table not in LEDGER_TABLES)
        statements = [f"GRANT USAGE ON SCHEMA {in_schema} TO {grantee}"]
        if other:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {other} TO {grantee}")
        if ledger:
            # Never granted more, not even for a moment: a re-run revokes nothing it gave.
            statements += [
                f"REVOKE ALL ON {ledger} FROM PUBLIC",
                f"REVOKE ALL ON {ledger} FROM {grantee}",
                f"GRANT SELECT, INSERT ON {ledger} TO {grantee}",
            ]
        for statement in (
            *statements,
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {in_schema} TO {grantee}",
            # Tables and sequences later migrations create get the same grants.
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {in_schema} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {grantee}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {in_schema} GRANT USAGE, SELECT ON SEQUENCES TO {grantee}",
        ):
            cursor.execute(statement)
    return True
