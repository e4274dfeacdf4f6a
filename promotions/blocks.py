"""Promotion blocks: a version of an app that must not be promoted into an environment again.

Public API (rollbacks create a block when a revert merges): `promotion_block_create`,
`promotion_block_clear`.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.permissions import ensure_role
from accounts.roles import Role
from audit.services import audit_event_record
from inventory.models import Application, Environment

from .models import PromotionBlock

SYSTEM = "promotions"


@transaction.atomic
def promotion_block_create(
    *,
    application: Application,
    environment: Environment,
    blocked_version: str,
    blocked_revision: str = "",
    reason: str = "",
    actor: User | None = None,
    source_type: str = "",
    source_id: str = "",
) -> PromotionBlock:
    """Block promoting `blocked_version` of an app into an environment; idempotent per version."""
    existing = (
        PromotionBlock.objects.select_for_update()
        .filter(application=application, environment=environment, blocked_version=blocked_version)
        .active()
        .first()
    )
    if existing is not None:
        return existing
    block = PromotionBlock.objects.create(
        application=application,
        environment=environment,
        blocked_version=blocked_version[:300],
        blocked_revision=blocked_revision[:64],
        reason=reason,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        source_type=source_type[:32],
        source_id=str(source_id)[:64],
    )
    audit_event_record(
        action="promotion.block_created",
        actor=actor,
        target_type="promotion_block",
        target_id=block.pk,
        target_label=f"{application.name}@{blocked_version} in {environment.name}",
        app=application.name,
        environment=environment.name,
        shas=[blocked_revision] if blocked_revision else [],
        after={"blocked_version": blocked_version, "source_type": source_type, "source_id": str(source_id)},
        message=reason,
        system_name=None if actor else SYSTEM,
    )
    return block


@transaction.atomic
def promotion_block_clear(*, block: PromotionBlock, actor: User) -> PromotionBlock:
    """Clear a block (release_manager of the app's project); clearing twice is a no-op."""
    application, environment = block.application, block.environment
    ensure_role(actor, Role.RELEASE_MANAGER, project=application.project, environment=environment.name)
    now = timezone.now()
    updated = PromotionBlock.objects.filter(pk=block.pk, cleared_at__isnull=True).update(
        cleared_at=now, cleared_by=actor
    )
    block.refresh_from_db()
    if updated:
        audit_event_record(
            action="promotion.block_cleared",
            actor=actor,
            target_type="promotion_block",
            target_id=block.pk,
            target_label=f"{application.name}@{block.blocked_version} in {environment.name}",
            app=application.name,
            environment=environment.name,
            before={"active": True},
            after={"active": False},
        )
    return block
