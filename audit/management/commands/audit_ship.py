"""manage.py audit_ship [--to DIR|URL]: copy every signed checkpoint off the server, once each."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.shipping import ShipError, audit_checkpoints_ship


class Command(BaseCommand):
    help = (
        "Ship each signed audit checkpoint not yet shipped to a directory (append-only checkpoints.jsonl) "
        "or an http(s) URL (one POST each). Keep the target out of reach of the database credentials; "
        "`audit_verify --shipped` compares the ledger with it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", default="", help="directory or http(s) URL (default: AUDIT_SHIP_TO)")

    def handle(self, *args, **options) -> None:
        target = options["to"] or settings.AUDIT_SHIP_TO or ""
        try:
            shipped = audit_checkpoints_ship(target=target)
        except ShipError as exc:
            raise CommandError(f"shipping failed: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"shipped {shipped} checkpoints to {target}"))
