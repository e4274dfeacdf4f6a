"""manage.py audit_export --format csv|jsonl|pdf|bundle|changes --out FILE [filters]."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.exports import EXPORT_FORMATS, audit_export_begin, audit_export_to_file
from audit.filters import AuditFilters


class Command(BaseCommand):
    help = "Export the audit trail (scheduled evidence collection); the export is itself an audit event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
        parser.add_argument("--out", required=True, help="file to write")
        parser.add_argument("--since", default="", help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC), inclusive")
        parser.add_argument(
            "--until", default="", help="YYYY-MM-DD (whole day) or YYYY-MM-DDTHH:MM, exclusive"
        )
        parser.add_argument("--env", default="")
        parser.add_argument("--app", default="")
        parser.add_argument("--actor", default="")
        parser.add_argument("--action", default="", help="an action or a namespace (promotion)")

    def handle(self, *args, **options) -> None:
        try:
            filters = AuditFilters.from_mapping(options)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        job = audit_export_begin(
            fmt=options["format"], filters=filters, scope=None, system_name="audit_export"
        )
        result = audit_export_to_file(job, options["out"], created_by="system:audit_export")
        count = result.get("count", result.get("lines", result.get("change_records")))
        self.stdout.write(
            self.style.SUCCESS(
                f"wrote {options['out']} ({options['format']}, {count}); export event #{job.event.sequence}"
            )
        )
