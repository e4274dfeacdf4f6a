"""manage.py audit_verify [BUNDLE]: exit 0 only when the chain (or the bundle) verifies."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.bundle import verify_bundle
from audit.shipping import shipped_checkpoints_read
from audit.signing import verification_keys
from audit.verify import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Verify the audit ledger: with no argument the database chain (every hash, link and signed "
        "checkpoint; with --shipped also against the checkpoints shipped off the server); with BUNDLE "
        "an exported zip, offline, without the database, against a pinned public key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle", nargs="?", help="a signed export bundle (.zip) to verify offline")
        parser.add_argument("--public-key", help="PEM file of the published audit public key (bundle mode)")
        parser.add_argument(
            "--key-fingerprint",
            help="SHA-256 fingerprint of the audit public key, as audit_checkpoint prints it (bundle mode)",
        )
        parser.add_argument(
            "--shipped",
            help="the shipped copy of the checkpoints (audit_ship's directory or checkpoints.jsonl): "
            "the ledger must hold every head it signed (database mode)",
        )
        parser.add_argument("--batch", type=int, default=2000, help="events read per query (database mode)")

    def handle(self, *args, **options) -> None:
        if options["bundle"]:
            self._bundle(options["bundle"], options.get("public_key"), options.get("key_fingerprint"))
        else:
            self._database(options["batch"], options.get("shipped"))

    def _bundle(self, path: str, public_key_path: str | None, fingerprint: str | None) -> None:
        pem = None
        if public_key_path:
            with open(public_key_path, encoding="ascii") as fh:
                pem = fh.read()
        # Neither given: pinned to this installation's keys (AUDIT_SIGNING_KEY, AUDIT_VERIFY_PUBLIC_KEYS),
        # never to the key the bundle carries.
        trusted = verification_keys() if pem is None and fingerprint is None else None
        report = verify_bundle(
            path, public_key_pem_text=pem, key_fingerprint=fingerprint, trusted_keys=trusted
        )
        if trusted is not None:
            self.stdout.write("note: verified against this installation's audit signing keys")
        if not report.ok:
            for problem in report.problems:
                self.stderr.write(f"  - {problem}")
            raise CommandError(f"bundle does NOT verify: first failure at {report.first_problem}")
        self.stdout.write(
            self.style.SUCCESS(f"OK: bundle verifies, {report.count} events, key {report.key_id}")
        )

    def _database(self, batch: int, shipped_path: str | None) -> None:
        shipped = None
        if shipped_path:
            try:
                shipped = shipped_checkpoints_read(shipped_path)
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read the shipped checkpoints: {exc}") from None
        report = audit_chain_verify(batch=batch, shipped=shipped)
        if not report.ok:
            for problem in report.problems[:50]:
                self.stderr.write(f"  - {problem}")
            raise CommandError(f"chain does NOT verify: first broken link at {report.first_problem}")
        against = f", {report.shipped} shipped checkpoints match" if shipped is not None else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: {report.count} events verify up to sequence {report.head_sequence}, "
                f"{report.checkpoints} signed checkpoints verify{against}"
            )
        )
