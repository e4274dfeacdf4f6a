"""A promotion is shown only to someone who may see the projects of all its apps (issue 15)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import RoleGrant
from tests.factories import ApplicationFactory, user_with_role
from tests.insight.builders import PromotionFactory, PromotionItemFactory

pytestmark = pytest.mark.django_db


def _scoped(username: str, project: str):
    user = user_with_role("viewer", username=username)
    user.groups.clear()
    RoleGrant.objects.create(user=user, role="viewer", project=project)
    return user


def test_a_release_train_across_two_projects_is_404_to_a_user_scoped_to_one(client):
    train = PromotionFactory()
    PromotionItemFactory(promotion=train, application=ApplicationFactory(name="pay-api", project="payments"))
    PromotionItemFactory(promotion=train, application=ApplicationFactory(name="cart", project="checkout"))
    own = PromotionFactory(
        source_env=train.source_env, target_env=train.target_env, repository=train.repository
    )
    PromotionItemFactory(promotion=own, application=ApplicationFactory(name="ledger", project="payments"))

    client.force_login(_scoped("payments-viewer", "payments"))
    assert client.get(reverse("promotions:detail", args=[train.pk])).status_code == 404
    assert client.get(f"/api/v1/promotions/{train.pk}").status_code == 404
    assert client.get(reverse("promotions:detail", args=[own.pk])).status_code == 200
    assert client.get(f"/api/v1/promotions/{own.pk}").status_code == 200
    listed = client.get(reverse("promotions:list")).context["page"].rows
    assert [p.pk for p in listed] == [own.pk]

    client.force_login(_scoped("both-viewer", "*"))
    assert client.get(reverse("promotions:detail", args=[train.pk])).status_code == 200
