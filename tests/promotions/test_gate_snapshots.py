"""A change keeps its gates as evaluated: at the request, on Argo CD's rendering, at PR opening.

The record and the change page show the request's gates first, then each later evaluation labelled
as such with its time; nothing is evaluated again once the change is complete.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import ChangeRecord
from promotions import services
from promotions.models import Promotion, PromotionState
from promotions.pullrequests import promotion_gates_on_rendering
from tests.conftest import wait_for
from tests.factories import user_with_role
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def test_records_and_pages_keep_each_gate_evaluation_with_its_label_and_time(
    sandbox, users, purge_broker, client
):
    app = promotable_app(sandbox)
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    requested = [g["name"] for g in promotion.requested_gates]
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    sandbox.merge(promotion.pr_number)

    def healthy() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) == PromotionState.HEALTHY

    wait_for(healthy, timeout=40, interval=0.5, message="promotion healthy")
    promotion.refresh_from_db()
    labels = [s["label"] for s in promotion.gate_evaluations]
    assert labels == ["at request", "on Argo CD's rendering", "at PR opening"], labels
    assert [g["name"] for g in promotion.gate_evaluations[0]["gates"]] == requested
    assert all(s["at"] for s in promotion.gate_evaluations)
    # Complete: nothing is evaluated again (the rendering gates answer what is stored).
    promotion_gates_on_rendering(promotion_id=promotion.pk)
    assert Promotion.objects.get(pk=promotion.pk).gate_evaluations == promotion.gate_evaluations

    record = ChangeRecord.objects.get(source_type="promotion", source_id=f"{promotion.pk}:{app.name}")
    at_request = [g for g in record.gates if g.get("evaluation") == "at request"]
    assert [g["name"] for g in at_request] == requested
    assert all(g.get("evaluated_at") for g in at_request)
    assert {g.get("evaluation") for g in record.gates} >= {"at request", "at PR opening"}

    client.force_login(users["rm"])
    api = client.get(f"/api/v1/promotions/{promotion.pk}").json()
    assert [s["label"] for s in api["gate_evaluations"]] == labels
    assert [g["name"] for g in api["gate_evaluations"][0]["gates"]] == requested

    client.force_login(user_with_role("auditor"))
    html = client.get(reverse("audit:change_detail", args=[record.pk])).content.decode()
    assert html.index("Gates at request") < html.index("Gates at PR opening")
    client.force_login(users["rm"])
    page = client.get(reverse("promotions:detail", args=[promotion.pk])).content.decode()
    assert (
        page.index("Gates at request")
        < page.index("Gates on Argo CD&#x27;s rendering")
        < page.index("Gates at PR opening")
    )
