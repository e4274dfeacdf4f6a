"""Checkpoints are append-only too (PostgreSQL and SQLite), users with events cannot be deleted,
checkpoints remember where they were shipped, and the runtime role gets INSERT/SELECT only on the ledger.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from audit.dbroles import ledger_protect, ledger_unprotect, runtime_role_grant


def protect(apps, schema_editor):
    ledger_protect(connection=schema_editor.connection)
    runtime_role_grant(connection=schema_editor.connection, role=settings.DATABASE_RUNTIME_USER)


def unprotect(apps, schema_editor):
    ledger_unprotect(connection=schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0005_indexes_for_evidence_and_fewer_duplicates'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.CreateModel(
            name='CheckpointShipment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('target', models.CharField(help_text='the directory or URL it was shipped to', max_length=500)),
                ('shipped_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('checkpoint', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='audit.auditcheckpoint')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('checkpoint', 'target'), name='uniq_checkpoint_shipment')],
            },
        ),
        migrations.RunPython(protect, unprotect),
    ]
