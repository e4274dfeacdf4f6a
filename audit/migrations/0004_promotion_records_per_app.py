"""Promotion change records are per app now (`source_id` "<promotion id>:<app>"): rename the old ones.

A single-app record keeps its row under the new id, so tracking a promotion that is in flight
during the upgrade updates it instead of adding a second record. A release-train record of several
apps ("a,b") is left as it was: it stays the evidence of a promotion that is finished.
"""

from django.db import migrations
from django.db.models import Q


def forwards(apps, schema_editor):
    ChangeRecord = apps.get_model("audit", "ChangeRecord")
    legacy = ChangeRecord.objects.filter(source_type="promotion").exclude(
        Q(source_id__contains=":") | Q(app__contains=",") | Q(app="")
    )
    for record in legacy.iterator():
        new_id = f"{record.source_id}:{record.app}"[:200]
        if not ChangeRecord.objects.filter(source_type="promotion", source_id=new_id).exists():
            ChangeRecord.objects.filter(pk=record.pk).update(source_id=new_id)


def backwards(apps, schema_editor):
    ChangeRecord = apps.get_model("audit", "ChangeRecord")
    for record in ChangeRecord.objects.filter(source_type="promotion", source_id__contains=":").iterator():
        old_id = record.source_id.split(":", 1)[0]
        if not ChangeRecord.objects.filter(source_type="promotion", source_id=old_id).exists():
            ChangeRecord.objects.filter(pk=record.pk).update(source_id=old_id)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_change_records_checkpoints")]

    operations = [migrations.RunPython(forwards, backwards)]
