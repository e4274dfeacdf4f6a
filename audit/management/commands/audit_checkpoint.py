"""manage.py audit_checkpoint: sign the chain head now (the periodic task does it hourly)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from audit.bundle import public_key_fingerprint
from audit.services import audit_checkpoint_create
from audit.signing import current_key_id, current_public_key_pem, public_key


class Command(BaseCommand):
    help = "Sign the current audit chain head (Ed25519) and print the public key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="sign even if the head is already signed")
        parser.add_argument("--public-key", action="store_true", help="only print the public key (PEM)")

    def handle(self, *args, **options) -> None:
        if options["public_key"]:
            self.stdout.write(current_public_key_pem().rstrip())
            return
        # The fingerprint to pin offline verification by (audit_verify BUNDLE --key-fingerprint).
        self.stdout.write(f"public key fingerprint (sha256): {public_key_fingerprint(public_key())}")
        checkpoint = audit_checkpoint_create(force=options["force"])
        if checkpoint is None:
            self.stdout.write("nothing to sign: the ledger is empty or its head is already signed")
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"signed head #{checkpoint.head_sequence} {checkpoint.head_hash} ({checkpoint.event_count} events) "
                    f"with key {current_key_id()}"
                )
            )
