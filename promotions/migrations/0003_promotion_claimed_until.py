"""Rename the PR-opening claim `lease_until` to `claimed_until`, the lifecycle's one claim field."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("promotions", "0002_promotion_tracking_error_and_more")]

    operations = [migrations.RenameField(model_name="promotion", old_name="lease_until", new_name="claimed_until")]
