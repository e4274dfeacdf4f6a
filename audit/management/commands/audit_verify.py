"""manage.py audit_verify [BUNDLE]: exit 0 only when the chain (or the bundle) verifies."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Verify the audit ledger: with no argument the database chain (every hash, link and signed "
        "checkpoint); with BUNDLE an exported zip, offline, without the database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle", nargs="?", help="a signed export bundle (.zip) to verify offline")
        parser.add_argument("--public-key", help="PEM file of the published audit public key (bundle mode)")
        parser.add_argument("--batch", type=int, default=2000, help="events read per query (database mode)")

    def handle(self, *args, **options) -> None:
        if options["bundle"]:
            self._bundle(options["bundle"], options.get("public_key"))
        else:
            self._database(options["batch"])

    def _bundle(self, path: str, public_key_path: str | None) -> None:
        from audit.bundle import verify_bundle

        pem = None
        if public_key_path:
            with open(public_key_path, encoding="ascii") as fh:
                pem = fh.read()
        report = verify_bundle(path, public_key_pem_text=pem)
        for note in report.notes:
            self.stdout.write(f"note: {note}")
        if not report.ok:
            for problem in report.problems:
                self.stderr.write(f"  - {problem}")
            raise CommandError(f"bundle does NOT verify: first failure at {report.first_problem}")
        self.stdout.write(
            self.style.SUCCESS(f"OK: bundle verifies, {report.count} events, key {report.key_id}")
        )

    def _database(self, batch: int) -> None:
        from audit.verify import audit_chain_verify

        report = audit_chain_verify(batch=batch)
        if not report.ok:
            for problem in report.problems[:50]:
                self.stderr.write(f"  - {problem}")
            raise CommandError(f"chain does NOT verify: first broken link at {report.first_problem}")
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: {report.count} events verify up to sequence {report.head_sequence}, "
                f"{report.checkpoints} signed checkpoints verify"
            )
        )
