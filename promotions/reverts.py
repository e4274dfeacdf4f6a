"""Promotions reverted by a rollback: the promotion's outcome says "rolled back by #N".

Public API (rollbacks call it when a revert merges): `promotion_mark_rolled_back`.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from changes.lifecycle import change_record

from .kind import PROMOTION
from .models import Promotion


@transaction.atomic
def promotion_mark_rolled_back(
    *, rollback_id: int, environment_id: int, reverted_shas: Sequence[str]
) -> list[int]:
    """Mark the promotions into ``environment_id`` whose merge commit was reverted; return their ids.

    Idempotent: a promotion already marked keeps its first rollback. Writes ``promotion.rolled_back``
    and re-syncs the promotion's change records (outcome ``rolled_back``) in the same transaction.
    """
    shas = [sha for sha in reverted_shas if sha]
    if not shas:
        return []
    now = timezone.now()
    marked: list[int] = []
    rows = Promotion.objects.select_for_update(of=("self",)).filter(
        target_env_id=environment_id, merge_commit_sha__in=shas, rolled_back_by__isnull=True
    )
    for promotion in rows.with_related().order_by("pk"):
        Promotion.objects.filter(pk=promotion.pk).update(rolled_back_by=rollback_id, rolled_back_at=now)
        promotion.rolled_back_by, promotion.rolled_back_at = rollback_id, now
        change_record(
            kind=PROMOTION,
            change=promotion,
            action="promotion.rolled_back",
            before={"state": promotion.state},
            after={"rolled_back_by": rollback_id},
            message=f"reverted by rollback #{rollback_id}",
        )
        marked.append(promotion.pk)
    return marked
