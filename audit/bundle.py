"""Verify audit evidence offline: event chains, signed checkpoints and signed export bundles.

This module is pure Python plus ``cryptography``: it never imports Django, so an auditor can run it
on a laptop with only the bundle and the published public key::

    python -m audit.bundle audit-bundle.zip --public-key audit-signing-key.pub.pem
    python -m audit.bundle audit-bundle.zip --key-fingerprint <64 hex digits>

The key must be pinned: a bundle carries its public key, so a bundle re-signed with any other key
would verify against the key inside it. ``manage.py audit_checkpoint`` prints the fingerprint.

``manage.py audit_verify BUNDLE`` calls the same code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .chain import event_hash

GENESIS_HASH = "0" * 64
BUNDLE_FORMAT = "gitopsportal-audit-bundle/1"
EVENTS_FILE = "events.jsonl"
CHANGES_FILE = "change-records.csv"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
CHECKPOINT_FORMAT = "gitopsportal-audit-checkpoint/1"
CHECKPOINT_FIELDS = ("head_sequence", "head_hash", "event_count", "created_at", "public_key_id")


# --- keys and signatures ----------------------------------------------------------------------------


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """Return the short id of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """Return the fingerprint to pin a key by: SHA-256 of its raw bytes, 64 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _clean_fingerprint(text: str) -> str:
    """Accept ``sha256:ab:cd…`` or plain hex; the full 64 digits (a short id is too easy to forge)."""
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError("a key fingerprint is 64 hex digits (SHA-256 of the raw public key)")
    return cleaned


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii") if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def load_private_key(pem: str | bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(
        pem.encode("ascii") if isinstance(pem, str) else pem, password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 private key")
    return key


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    return base64.b64encode(private_key.sign(payload)).decode("ascii")


def signature_valid(public_key: Ed25519PublicKey, payload: bytes, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def checkpoint_payload(checkpoint: dict[str, Any]) -> bytes:
    """Return the bytes a checkpoint signature covers (canonical JSON of its fields)."""
    payload = {name: checkpoint.get(name) for name in CHECKPOINT_FIELDS}
    payload["format"] = CHECKPOINT_FORMAT
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


# --- chain verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    sequence: int | None
    message: str

    def __str__(self) -> str:
        return f"sequence {self.sequence}: {self.message}" if self.sequence is not None else self.message


@dataclass
class ChainVerifier:
    """Feed events in sequence order; collects every broken link, remembers the first.

    ``contiguous``: the events must be the whole chain segment (no gaps). With ``False`` (a filtered
    export) gaps are allowed and only adjacent events are linked; every event's own hash is still
    recomputed.
    """

    contiguous: bool = True
    expect_genesis: bool = False
    count: int = 0
    first: dict[str, Any] | None = None
    last_sequence: int | None = None
    last_hash: str | None = None
    problems: list[Problem] = field(default_factory=list)
    max_problems: int = 100

    def _problem(self, sequence: int | None, message: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(sequence, message))

    def feed(self, record: dict[str, Any]) -> None:
        sequence = record.get("sequence")
        if not isinstance(sequence, int):
            self._problem(None, f"event #{self.count + 1} has no integer sequence")
            self.count += 1
            return
        stored = record.get("hash")
        if event_hash(record) != stored:
            self._problem(sequence, "hash does not match the event's content (the event was altered)")
        if self.last_sequence is None:
            if self.expect_genesis and (sequence != 1 or record.get("prev_hash") != GENESIS_HASH):
                self._problem(sequence, "the chain does not start at sequence 1 with the genesis hash")
            self.first = {"sequence": sequence, "hash": stored, "prev_hash": record.get("prev_hash")}
        elif sequence <= self.last_sequence:
            self._problem(sequence, f"out of order or duplicate (after {self.last_sequence})")
        elif sequence == self.last_sequence + 1:
            if record.get("prev_hash") != self.last_hash:
                self._problem(sequence, f"prev_hash does not match the hash of sequence {self.last_sequence}")
        elif self.contiguous:
            self._problem(sequence, f"gap: sequences {self.last_sequence + 1}..{sequence - 1} are missing")
        self.count += 1
        self.last_sequence = sequence
        self.last_hash = stored if isinstance(stored, str) else None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return (
            min(self.problems, key=lambda p: (p.sequence is None, p.sequence or 0)) if self.problems else None
        )


def verify_checkpoint(checkpoint: dict[str, Any], public_keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Return None if the checkpoint's signature verifies with the key it names, else why not."""
    key = public_keys.get(str(checkpoint.get("public_key_id")))
    if key is None:
        return f"checkpoint #{checkpoint.get('head_sequence')}: unknown signing key {checkpoint.get('public_key_id')}"
    if not signature_valid(key, checkpoint_payload(checkpoint), str(checkpoint.get("signature", ""))):
        return f"checkpoint #{checkpoint.get('head_sequence')}: the signature does not verify"
    return None


# --- bundles --------------------------------------------------------------------------------------------


@dataclass
class BundleReport:
    ok: bool
    problems: list[Problem]
    count: int = 0
    key_id: str = ""
    key_pinned: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        with_seq = [p for p in self.problems if p.sequence is not None]
        return min(with_seq, key=lambda p: p.sequence or 0) if with_seq else self.problems[0]


def _iter_jsonl(stream: Iterable[bytes], problems: list[Problem]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(Problem(None, f"{EVENTS_FILE} line {number} is not valid JSON"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(None, f"{EVENTS_FILE} line {number} is not a JSON object"))
            continue
        yield record


def _sha256_member(zf: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with zf.open(name) as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_bundle(
    path: str,
    *,
    public_key_pem_text: str | None = None,
    key_fingerprint: str | None = None,
    trusted_keys: dict[str, Ed25519PublicKey] | None = None,
) -> BundleReport:
    """Verify a signed export bundle offline against a pinned key; an unpinned key fails.

    Pin by ``public_key_pem_text`` (the published PEM), ``key_fingerprint`` (the fingerprint
    ``audit_checkpoint`` prints) or ``trusted_keys`` (by key id: this installation's keys).
    """
    problems: list[Problem] = []
    notes: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return BundleReport(False, [Problem(None, f"not a readable zip file: {exc}")])
    with zf:
        names = set(zf.namelist())
        missing = [n for n in (EVENTS_FILE, CHANGES_FILE, MANIFEST_FILE, SIGNATURE_FILE) if n not in names]
        if missing:
            return BundleReport(False, [Problem(None, f"missing from the bundle: {', '.join(missing)}")])
        manifest_bytes = zf.read(MANIFEST_FILE)
        signature = zf.read(SIGNATURE_FILE).decode("ascii", "replace").strip()
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError:
            return BundleReport(False, [Problem(None, "manifest.json is not valid JSON")])
        if manifest.get("format") != BUNDLE_FORMAT:
            problems.append(Problem(None, f"unknown bundle format {manifest.get('format')!r}"))

        # Which key: a pinned one. The key inside the bundle counts only when its fingerprint is pinned.
        try:
            if public_key_pem_text is not None:
                key = load_public_key(public_key_pem_text)
            elif key_fingerprint is None and trusted_keys is not None:
                known = trusted_keys.get(str(manifest.get("public_key_id")))
                if known is None:
                    return BundleReport(
                        False,
                        [
                            Problem(
                                None,
                                f"the bundle was signed by key {manifest.get('public_key_id')}, "
                                "which this installation does not know",
                            )
                        ],
                    )
                key = known
            else:
                key = load_public_key(manifest.get("public_key", ""))
            pinned_fingerprint = _clean_fingerprint(key_fingerprint) if key_fingerprint is not None else None
        except ValueError as exc:
            return BundleReport(False, [Problem(None, f"cannot load the public key: {exc}")])
        pinned = public_key_pem_text is not None or key_fingerprint is not None or trusted_keys is not None
        if not pinned:
            return BundleReport(
                False,
                [
                    Problem(
                        None,
                        "no pinned public key: pass --public-key FILE (the key the portal publishes) or "
                        "--key-fingerprint HEX (printed by audit_checkpoint); the key inside a bundle "
                        "proves nothing on its own",
                    )
                ],
            )
        if pinned_fingerprint is not None and public_key_fingerprint(key) != pinned_fingerprint:
            return BundleReport(
                False,
                [
                    Problem(
                        None,
                        f"the bundle's key has fingerprint {public_key_fingerprint(key)}, "
                        f"not the pinned {pinned_fingerprint}",
                    )
                ],
            )
        key_id = public_key_id(key)
        if manifest.get("public_key_id") != key_id:
            problems.append(
                Problem(None, f"the bundle was signed by key {manifest.get('public_key_id')}, not {key_id}")
            )
        if not signature_valid(key, manifest_bytes, signature):
            problems.append(Problem(None, "the detached signature over manifest.json does not verify"))

        # Files: digests and sizes the signed manifest states.
        files = manifest.get("files", {})
        for name in (EVENTS_FILE, CHANGES_FILE):
            expected = (files.get(name) or {}).get("sha256")
            if expected != _sha256_member(zf, name):
                problems.append(Problem(None, f"{name} does not match the sha256 in the signed manifest"))

        # Events: every hash recomputed, adjacent links checked, gaps only if the export was filtered.
        checkpoint = manifest.get("checkpoint") or {}
        verifier = ChainVerifier(contiguous=bool(manifest.get("contiguous", True)))
        with zf.open(EVENTS_FILE) as fh:
            for record in _iter_jsonl(fh, problems):
                verifier.feed(record)
                at_head = checkpoint and record.get("sequence") == checkpoint.get("head_sequence")
                if at_head and record.get("hash") != checkpoint.get("head_hash"):
                    problems.append(
                        Problem(record.get("sequence"), "hash differs from the signed checkpoint's head")
                    )
        problems.extend(verifier.problems)
        if manifest.get("count") != verifier.count:
            problems.append(
                Problem(
                    None, f"the manifest counts {manifest.get('count')} events, the file has {verifier.count}"
                )
            )
        first, last = manifest.get("first") or {}, manifest.get("last") or {}
        if verifier.count:
            if first.get("sequence") != (verifier.first or {}).get("sequence") or first.get("hash") != (
                verifier.first or {}
            ).get("hash"):
                problems.append(
                    Problem(None, "the first event differs from the manifest's first sequence/hash")
                )
            if last.get("sequence") != verifier.last_sequence or last.get("hash") != verifier.last_hash:
                problems.append(
                    Problem(None, "the last event differs from the manifest's last sequence/hash")
                )

        # Checkpoint: signed chain head; if it falls inside the exported events its hash must match.
        if checkpoint:
            error = verify_checkpoint(checkpoint, {key_id: key})
            if error:
                problems.append(Problem(None, error))
            if (
                verifier.count
                and verifier.last_sequence is not None
                and checkpoint.get("head_sequence", 0) < (verifier.last_sequence or 0)
            ):
                problems.append(Problem(None, "the checkpoint is older than the last exported event"))
        else:
            problems.append(Problem(None, "the manifest carries no signed checkpoint"))
    return BundleReport(not problems, problems, verifier.count, key_id, pinned, notes)


def main(argv: list[str] | None = None) -> int:
    """Verify a bundle from the command line; exit 0 only if everything verifies."""
    parser = argparse.ArgumentParser(description="Verify a GitOps Portal audit bundle offline.")
    parser.add_argument("bundle")
    parser.add_argument("--public-key", help="PEM file of the portal's published audit public key")
    parser.add_argument(
        "--key-fingerprint", help="SHA-256 fingerprint of that key (audit_checkpoint prints it)"
    )
    args = parser.parse_args(argv)
    pem = None
    if args.public_key:
        with open(args.public_key, encoding="ascii") as fh:
            pem = fh.read()
    report = verify_bundle(args.bundle, public_key_pem_text=pem, key_fingerprint=args.key_fingerprint)
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"OK: {report.count} events verified, signed by key {report.key_id}")
        return 0
    first = report.first_problem
    print(f"FAILED: {first}", file=sys.stderr)
    for problem in report.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
