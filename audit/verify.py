"""Verify the ledger in the database: every hash, every link, every signed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        with_seq = [p for p in self.problems if p.sequence is not None]
        if with_seq:
            return min(with_seq, key=lambda p: p.sequence or 0)
        return self.problems[0] if self.problems else None


def audit_chain_verify(*, batch: int = 2000) -> ChainReport:
    """Walk the chain in keyset batches (constant memory) and check every signed checkpoint."""
    verifier = ChainVerifier(contiguous=True, expect_genesis=True)
    for event in audit_chain_walk(batch=batch):
        verifier.feed(event_as_record(event))
    problems = list(verifier.problems)

    keys = verification_keys()
    checkpoints = 0
    last_id = 0
    while True:
        chunk = list(AuditCheckpoint.objects.filter(id__gt=last_id).order_by("id")[:500])
        if not chunk:
            break
        last_id = chunk[-1].pk
        heads = dict(
            AuditEvent.objects.filter(sequence__in=[c.head_sequence for c in chunk]).values_list(
                "sequence", "hash"
            )
        )
        for checkpoint in chunk:
            checkpoints += 1
            error = verify_checkpoint(checkpoint_as_record(checkpoint), keys)
            if error:
                problems.append(Problem(checkpoint.head_sequence, error))
            elif checkpoint.head_sequence not in heads:
                problems.append(
                    Problem(
                        checkpoint.head_sequence, "a signed checkpoint names this event but it is missing"
                    )
                )
            elif heads[checkpoint.head_sequence] != checkpoint.head_hash:
                problems.append(
                    Problem(checkpoint.head_sequence, "hash differs from the one a signed checkpoint holds")
                )
            elif checkpoint.event_count != checkpoint.head_sequence:
                problems.append(
                    Problem(
                        checkpoint.head_sequence,
                        f"checkpoint counts {checkpoint.event_count} events up to here",
                    )
                )
    return ChainReport(verifier.count, verifier.last_sequence, checkpoints, problems)
