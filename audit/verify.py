"""Verify the ledger in the database: every hash, every link, every signed checkpoint.

With a shipped copy of the checkpoints (audit.shipping), the copy is the reference: every shipped
checkpoint must verify and the ledger must hold, at its sequence, the hash it signed. That catches
what the database alone cannot: the newest events deleted together with their checkpoints, or the
events after the last remaining checkpoint rewritten and re-chained.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .bundle import ChainVerifier, Problem, verify_checkpoint
from .models import AuditCheckpoint, AuditEvent
from .selectors import audit_chain_walk
from .services import checkpoint_as_record, event_as_record
from .signing import verification_keys


@dataclass
class ChainReport:
    count: int
    head_sequence: int | None
    checkpoints: int
    problems: list[Problem] = field(default_factory=list)
    shipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        with_seq = [p for p in self.problems if p.sequence is not None]
        if with_seq:
            return min(with_seq, key=lambda p: p.sequence or 0)
        return self.problems[0] if self.problems else None


def _database_checkpoints() -> Iterator[list[dict[str, Any]]]:
    last_id = 0
    while True:
        chunk = list(AuditCheckpoint.objects.filter(id__gt=last_id).order_by("id")[:500])
        if not chunk:
            return
        last_id = chunk[-1].pk
        yield [checkpoint_as_record(checkpoint) for checkpoint in chunk]


def _in_chunks(records: list[dict[str, Any]], size: int = 500) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _check_heads(
    chunks: Iterable[list[dict[str, Any]]], keys: dict[str, Ed25519PublicKey], source: str
) -> tuple[int, list[Problem]]:
    """Check each checkpoint's signature and that the ledger holds the head it signed."""
    problems: list[Problem] = []
    count = 0
    for chunk in chunks:
        heads = dict(
            AuditEvent.objects.filter(
                sequence__in=[int(c.get("head_sequence") or 0) for c in chunk]
            ).values_list("sequence", "hash")
        )
        for checkpoint in chunk:
            count += 1
            sequence = int(checkpoint.get("head_sequence") or 0)
            error = verify_checkpoint(checkpoint, keys)
            if error:
                problems.append(
                    Problem(sequence, error if source == "checkpoint" else f"shipped copy: {error}")
                )
            elif sequence not in heads:
                problems.append(Problem(sequence, f"a signed {source} names this event but it is missing"))
            elif heads[sequence] != checkpoint.get("head_hash"):
                problems.append(Problem(sequence, f"hash differs from the one a signed {source} holds"))
            elif checkpoint.get("event_count") != sequence:
                problems.append(
                    Problem(sequence, f"{source} counts {checkpoint.get('event_count')} events up to here")
                )
    return count, problems


def audit_chain_verify(*, batch: int = 2000, shipped: list[dict[str, Any]] | None = None) -> ChainReport:
    """Walk the chain in keyset batches (constant memory), check every signed checkpoint and,
    given ``shipped`` (records read by :func:`audit.shipping.shipped_checkpoints_read`), the shipped copy.
    """
    verifier = ChainVerifier(contiguous=True, expect_genesis=True)
    for event in audit_chain_walk(batch=batch):
        verifier.feed(event_as_record(event))
    problems = list(verifier.problems)

    keys = verification_keys()
    checkpoints, found = _check_heads(_database_checkpoints(), keys, "checkpoint")
    problems += found
    shipped_count = 0
    if shipped is not None:
        if not shipped:
            problems.append(Problem(None, "the shipped copy holds no checkpoint"))
        shipped_count, found = _check_heads(_in_chunks(shipped), keys, "shipped checkpoint")
        problems += found
    return ChainReport(verifier.count, verifier.last_sequence, checkpoints, problems, shipped_count)
