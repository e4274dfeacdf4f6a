"""Drop three foreign-key indexes that a unique constraint or index already starts with.

inventory_commit.repository_id (uniq_commit_sha, uniq_commit_seq), inventory_committouch.commit_id
(uniq_commit_touch) and .application_id (touch_app_env_seq): lookups and ON DELETE CASCADE use the
wider index's prefix, and each commit or touch ingested updates one index fewer.

Only the indexes go: AlterField alone would also drop and re-add (re-validate) the foreign keys.
"""

import django.db.models.deletion
from django.db import migrations, models

_INDEXES = (
    ("inventory_commit_repository_id_b0314ed8", "inventory_commit", "repository_id"),
    ("inventory_committouch_application_id_098273a2", "inventory_committouch", "application_id"),
    ("inventory_committouch_commit_id_72e0dbb1", "inventory_committouch", "commit_id"),
)


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0011_commit_touch_carried"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")',
                )
                for name, table, column in _INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="commit",
                    name="repository",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="commits",
                        to="inventory.gitrepository",
                    ),
                ),
                migrations.AlterField(
                    model_name="committouch",
                    name="application",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="commit_touches",
                        to="inventory.application",
                    ),
                ),
                migrations.AlterField(
                    model_name="committouch",
                    name="commit",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="touches",
                        to="inventory.commit",
                    ),
                ),
            ],
        ),
    ]
