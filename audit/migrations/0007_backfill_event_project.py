"""Fill the new ``project`` column of existing events (and change records) from their apps.

An event names its app(s) in ``app`` ("a" or "a,b" for a release train); its project is the
project(s) of those applications, comma-separated and sorted, like new events write it. Events
whose apps are unknown (or that name none: sign-ins, settings) stay blank. ``environment`` is not
touched: it is one of the hashed fields, so rewriting it would break the chain.

``project`` is not hashed (audit/chain.py), so the chain still verifies after the backfill. The
ledger's append-only trigger refuses UPDATE, so on PostgreSQL the migration (which runs as the
table's owner) disables the table's user triggers for this transaction only; DDL is
transactional there, so a failure leaves the triggers on.
"""

from django.db import migrations

# One UPDATE per distinct app label keeps the work set-based whatever the ledger's size.


def _projects_by_app(apps):
    Application = apps.get_model("inventory", "Application")
    return {name: project for name, project in Application.objects.values_list("name", "project") if project}


def _project_of(label, projects_by_app):
    return ",".join(sorted({projects_by_app[n] for n in label.split(",") if n in projects_by_app}))[:200]


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    ChangeRecord = apps.get_model("audit", "ChangeRecord")
    projects_by_app = _projects_by_app(apps)
    if not projects_by_app:
        return
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres:
        schema_editor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
    labels = AuditEvent.objects.filter(project="").exclude(app="").values_list("app", flat=True).distinct()
    for label in list(labels.order_by("app")):
        project = _project_of(label, projects_by_app)
        if project:
            AuditEvent.objects.filter(project="", app=label).update(project=project)
    if postgres:
        schema_editor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")
    for app_name in ChangeRecord.objects.filter(project="").order_by("app").values_list("app", flat=True).distinct():
        project = _project_of(app_name, projects_by_app)
        if project:
            ChangeRecord.objects.filter(project="", app=app_name).update(project=project)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0006_auditevent_project_and_action_choices"),
        ("inventory", "0002_poll_and_ingest_state"),
    ]
    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
