"""Role separation: migrations run as the owner, the portal as a runtime role that cannot rewrite evidence.

Each test migrates a database of its own in a subprocess, the way a deployment does it
(DATABASE_URL = the runtime role, DATABASE_MIGRATE_URL = the owner), then attacks the ledger with
the runtime role's credentials.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.db import connection

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

LEDGER_STATEMENTS = [
    "UPDATE audit_auditevent SET message = 'edited'",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
    "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
    "DROP TRIGGER audit_event_no_update_delete ON audit_auditevent",
    "UPDATE audit_auditcheckpoint SET event_count = 0",
    "DELETE FROM audit_auditcheckpoint",
    "TRUNCATE audit_auditcheckpoint",
    "ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER",
    "DROP TRIGGER audit_checkpoint_no_update_delete ON audit_auditcheckpoint",
]

# What the web and the workers do with the ledger: append events, sign checkpoints, verify.
APPEND_AND_SIGN = (
    "from audit.services import audit_event_record, audit_checkpoint_create;"
    "from audit.verify import audit_chain_verify;"
    "[audit_event_record(action='promotion.requested', message=str(i)) for i in range(3)];"
    "assert audit_checkpoint_create() is not None;"
    "assert audit_chain_verify().ok"
)

SQLITE_SCRIPT = """
from django.contrib.auth import get_user_model
from django.db.models import ProtectedError
from audit.services import audit_event_record, audit_checkpoint_create

user = get_user_model().objects.create_user("leaver")
audit_event_record(action="promotion.requested", actor=user)
audit_checkpoint_create()
try:
    user.delete()
except ProtectedError:
    pass
else:
    raise SystemExit("a user the ledger names was deleted")
"""


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DATABASE_MIGRATE_URL"}}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.update(values)
    return env


@pytest.fixture
def two_roles():
    """A fresh database owned by an owner role, and a runtime login role; both dropped afterwards."""
    s = connection.settings_dict
    host, port = s["HOST"] or "127.0.0.1", s["PORT"] or "5432"
    suffix = uuid.uuid4().hex[:10]
    names = {"db": f"gp_roles_{suffix}", "owner": f"gp_owner_{suffix}", "runtime": f"gp_runtime_{suffix}"}
    admin = psycopg.connect(
        host=host,
        port=port,
        user=s["USER"],
        password=s["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    admin.execute(f"CREATE ROLE {names['owner']} LOGIN")
    admin.execute(f"CREATE ROLE {names['runtime']} LOGIN")
    admin.execute(f"CREATE DATABASE {names['db']} OWNER {names['owner']}")
    names["url"] = f"postgres://{{user}}@{host}:{port}/{names['db']}"
    try:
        yield names
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {names['db']} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {names['runtime']}")
        admin.execute(f"DROP ROLE IF EXISTS {names['owner']}")
        admin.close()


def test_the_runtime_role_may_append_but_never_rewrite_the_ledger_or_its_checkpoints(two_roles):
    runtime_url = two_roles["url"].format(user=two_roles["runtime"])
    owner_url = two_roles["url"].format(user=two_roles["owner"])
    env = _env(DATABASE_URL=runtime_url, DATABASE_MIGRATE_URL=owner_url)

    # `migrate` connects as the owner (the runtime role could not create a table) ...
    _manage("migrate", "--noinput", env=env)
    # ... every other process as the runtime role, which can do the portal's work.
    _manage("shell", "-c", APPEND_AND_SIGN, env=env)

    with psycopg.connect(runtime_url.replace("postgres://", "postgresql://"), autocommit=True) as runtime:
        owners = dict(
            runtime.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'")
        )
        assert owners["audit_auditevent"] == owners["audit_auditcheckpoint"] == two_roles["owner"]
        assert two_roles["runtime"] not in owners.values()
        for statement in LEDGER_STATEMENTS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                runtime.execute(statement)
        assert runtime.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0] == 3
        assert runtime.execute("SELECT count(*) FROM audit_auditcheckpoint").fetchone()[0] == 1
        # Everything else keeps full DML: change records are a projection the services update.
        runtime.execute("UPDATE audit_changerecord SET title = title")
        runtime.execute("DELETE FROM django_session")


def test_the_runtime_role_cannot_migrate(two_roles):
    runtime_url = two_roles["url"].format(user=two_roles["runtime"])
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=_env(DATABASE_URL=runtime_url),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "permission denied" in result.stderr


def test_sqlite_refuses_update_and_delete_of_events_and_checkpoints_and_user_deletion(tmp_path):
    database = tmp_path / "portal.sqlite3"
    env = _env(DATABASE_URL=f"sqlite:///{database}", GITOPSPORTAL_VAR_DIR=str(tmp_path))
    _manage("migrate", "--noinput", env=env)
    _manage("shell", "-c", SQLITE_SCRIPT, env=env)
    db = sqlite3.connect(database)
    try:
        for statement in (
            "UPDATE audit_auditevent SET message = 'edited'",
            "UPDATE audit_auditevent SET actor_id = NULL",
            "DELETE FROM audit_auditevent",
            "UPDATE audit_auditcheckpoint SET event_count = 0",
            "DELETE FROM audit_auditcheckpoint",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)
        assert (
            db.execute("SELECT count(*) FROM audit_auditevent WHERE actor_id IS NOT NULL").fetchone()[0] == 1
        )
        assert db.execute("SELECT count(*) FROM auth_user WHERE username = 'leaver'").fetchone()[0] == 1
    finally:
        db.close()
