"""Ship signed checkpoints off the server, and read the shipped copy back for verification.

Whoever holds the database can delete the newest events *and* the checkpoints that named them, or
rewrite what came after the last checkpoint it left in place; the chain in the database then
verifies. A copy of every signed checkpoint kept where the database credentials cannot reach is
the reference that catches it: ``audit_verify --shipped`` requires the ledger to hold, at each
shipped checkpoint's sequence, the very hash that checkpoint signed (the head must match or
extend the last shipped checkpoint).

Targets (``AUDIT_SHIP_TO`` or ``manage.py audit_ship --to``):

- a directory: one JSON line per checkpoint appended to ``<dir>/checkpoints.jsonl`` (put it on a
  mount the portal can append to but not rewrite, e.g. another host's share, ``chattr +a``);
- an ``http(s)://`` URL: one POST per checkpoint, the JSON record as the body, with
  ``Authorization: Bearer AUDIT_SHIP_TOKEN`` when set (a log collector, an object store with a lock).

Each record is :func:`audit.services.checkpoint_as_record` plus ``"format"``. Shipping is
idempotent per target (:class:`audit.models.CheckpointShipment` remembers what was sent); a
record sent twice after a crash is harmless, the reader keeps one per signature.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.db import IntegrityError, transaction

from .bundle import CHECKPOINT_FORMAT
from .models import AuditCheckpoint, CheckpointShipment
from .services import checkpoint_as_record

SHIPPED_FILE = "checkpoints.jsonl"
TIMEOUT = (5, 20)
_session = requests.Session()


class ShipError(Exception):
    """A checkpoint could not be shipped; nothing is marked shipped, the next run retries."""


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _shipped_path(target: str) -> Path:
    path = Path(target.removeprefix("file://"))
    return path / SHIPPED_FILE if not path.suffix else path


def _append_line(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    # O_APPEND: one write per record, never a rewrite of what is there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _post(url: str, record: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/json"}
    if settings.AUDIT_SHIP_TOKEN:
        headers["Authorization"] = f"Bearer {settings.AUDIT_SHIP_TOKEN}"
    # Reference: a plain HTTP collector; any 2xx means stored.
    try:
        response = _session.post(url, data=json.dumps(record), headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ShipError(f"{url}: {exc.__class__.__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise ShipError(f"{url}: HTTP {response.status_code}")


def shipped_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """Return the record shipped for a checkpoint: the signed fields, the signature and the format."""
    return {**checkpoint_as_record(checkpoint), "format": CHECKPOINT_FORMAT}


def audit_checkpoints_ship(*, target: str) -> int:
    """Ship every signed checkpoint not yet shipped to ``target``, oldest first; return how many.

    Each checkpoint is claimed (a unique row) in the transaction that ships it: two runs at once
    ship it once, and a failed send leaves it unclaimed for the next run.
    """
    if not target:
        raise ShipError("no target: set AUDIT_SHIP_TO or pass --to")
    shipped = 0
    pending = AuditCheckpoint.objects.exclude(
        id__in=CheckpointShipment.objects.filter(target=target).values("checkpoint_id")
    ).order_by("id")
    for checkpoint in pending.iterator(chunk_size=200):
        try:
            with transaction.atomic():
                CheckpointShipment.objects.create(checkpoint=checkpoint, target=target)
                record = shipped_record(checkpoint)
                if _is_url(target):
                    _post(target, record)
                else:
                    try:
                        _append_line(_shipped_path(target), record)
                    except OSError as exc:
                        raise ShipError(f"{target}: {exc}") from None
        except IntegrityError:
            continue  # another run shipped it meanwhile
        shipped += 1
    return shipped


def shipped_checkpoints_read(path: str) -> list[dict[str, Any]]:
    """Read a shipped copy (a checkpoints.jsonl file or its directory): one record per signature."""
    file = _shipped_path(path)
    records: dict[str, dict[str, Any]] = {}
    with open(file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"{file} line {number} is not valid JSON") from None
            if not isinstance(record, dict) or "signature" not in record:
                raise ValueError(f"{file} line {number} is not a signed checkpoint")
            records.setdefault(str(record["signature"]), record)
    return sorted(records.values(), key=lambda r: (int(r.get("head_sequence") or 0), str(r["signature"])))
