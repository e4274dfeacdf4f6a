"""One story per change: a promotion that was rolled back says so and links the rollback, and back."""

from __future__ import annotations

import pytest
from django.utils import timezone

from audit.models import AuditEvent, ChangeRecord
from promotions.models import Promotion, PromotionItem, PromotionState
from promotions.records import promotion_change_records_sync
from promotions.reverts import promotion_mark_rolled_back
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, EnvironmentFactory, GitRepositoryFactory, user_with_role
from tests.promotions.conftest import _groups

pytestmark = pytest.mark.django_db

MERGE_SHA = "ab" * 20


@pytest.fixture
def change(roles):
    stage = EnvironmentFactory(name="stage", order=1)
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    app = ApplicationFactory(name="ledger")
    promotion = Promotion.objects.create(
        source_env=stage,
        target_env=prod,
        repository=GitRepositoryFactory(),
        requested_by_name="rita",
        state=PromotionState.HEALTHY,
        merge_commit_sha=MERGE_SHA,
        merged_at=timezone.now(),
        healthy_at=timezone.now(),
    )
    item = PromotionItem.objects.create(
        promotion=promotion, application=app, target_env=prod, active=False, version_after="1.2.0"
    )
    promotion_change_records_sync(promotion, [item])
    rollback = RollbackRequest.objects.create(
        application=app,
        environment=prod,
        mode=RollbackRequest.Mode.PREVIOUS,
        state=RollbackRequest.State.MERGED,
        requested_by_name="olga",
        reason="error rate",
        base_branch="main",
        current_revision=MERGE_SHA,
        revert_shas=[MERGE_SHA],
    )
    return promotion, rollback


@pytest.fixture
def roles(db):
    _groups()


def test_a_rolled_back_promotion_says_so_and_links_the_rollback(client, change):
    promotion, rollback = change
    record = ChangeRecord.objects.get(source_type="promotion")
    assert record.outcome == "succeeded"
    assert promotion_mark_rolled_back(
        rollback_id=rollback.pk, environment_id=rollback.environment_id, reverted_shas=rollback.revert_shas
    ) == [promotion.pk]
    # Idempotent: a second merge notice changes nothing.
    assert (
        promotion_mark_rolled_back(
            rollback_id=rollback.pk,
            environment_id=rollback.environment_id,
            reverted_shas=rollback.revert_shas,
        )
        == []
    )
    record.refresh_from_db()
    assert record.outcome == "rolled_back"
    event = AuditEvent.objects.get(action="promotion.rolled_back")
    assert event.after["rolled_back_by"] == rollback.pk
    client.force_login(user_with_role("viewer", "vic"))
    html = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert f"Rolled back by #{rollback.pk}" in html and f'href="/rollbacks/{rollback.pk}/"' in html
    listing = client.get("/promotions/").content.decode()
    assert f"Rolled back by #{rollback.pk}" in listing


def test_the_rollback_page_links_the_promotion_it_reverts(client, change):
    promotion, rollback = change
    client.force_login(user_with_role("viewer", "vic"))
    html = client.get(f"/rollbacks/{rollback.pk}/").content.decode()
    assert f'href="/promotions/{promotion.pk}/"' in html and f"promotion #{promotion.pk}" in html
