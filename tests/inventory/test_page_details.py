"""Small things people notice: one timestamp format, SHA copy buttons, Argo CD links, frozen gates."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.template import Context, Template
from django.urls import reverse

from inventory import models as inv
from promotions.models import Promotion, PromotionItem, PromotionState
from tests.factories import user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db

EXACT = re.compile(
    r'<time datetime="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)" title="\1">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>'
)


def test_one_timestamp_format_with_the_zone_and_the_exact_time_on_hover():
    html = Template('{{ at|when }} {{ at|when:"ago" }} [{{ none|when }}]').render(
        Context({"at": datetime(2026, 12, 5, 14, 3, 7, tzinfo=UTC), "none": None})
    )
    assert html.startswith(
        '<time datetime="2026-12-05T14:03:07+00:00" title="2026-12-05T14:03:07+00:00">2026-12-05 14:03 UTC</time>'
    )
    assert 'UTC</time> <span class="muted ago">(' in html and "ago)</span>" in html and "[]" in html


def test_pages_show_exact_times_copy_buttons_and_argo_cd_links(client):
    _seed(1)
    inv.ArgoApplication.objects.filter(name="svc-1-000-prod-eu").update(app_namespace="team-apps")
    client.force_login(user_with_role("viewer"))
    matrix = client.get(reverse("inventory:matrix")).content.decode()
    # Each cell's deployment time: the exact one, the relative one only beside it.
    cell = matrix.split('data-argo-app="svc-1-000-dev-eu"', 1)[1].split("</td>", 1)[0]
    assert EXACT.search(cell), cell
    revision = inv.ArgoApplication.objects.get(name="svc-1-000-dev-eu").deployed_revision
    assert f'data-copy="{revision}"' in cell and 'aria-label="Copy ' in cell
    assert "onclick" not in matrix  # CSP: no inline handlers, static/js/portal.js copies

    page = client.get(reverse("inventory:app", args=["svc-1-000"])).content.decode()
    instance = inv.ArgoInstance.objects.get().url.rstrip("/")
    assert f'href="{instance}/applications/team-apps/svc-1-000-prod-eu"' in page
    assert f'href="{instance}/applications/argocd/svc-1-000-dev-eu"' in page
    assert EXACT.search(page) and " UTC</time>" in page
    assert "data-copy=" in page


def test_a_finished_promotion_shows_the_gates_its_requester_saw(client):
    _seed(1)
    app = inv.Application.objects.get(name="svc-1-000")
    stage, prod = inv.Environment.objects.get(name="stage"), inv.Environment.objects.get(name="prod")
    requested = [{"name": "source_healthy", "label": "stage healthy", "passed": True, "blocking": True,
                  "detail": "as requested"}]  # fmt: skip
    later = [{"name": "source_healthy", "label": "stage healthy", "passed": True, "blocking": True,
              "detail": "re-evaluated at PR time"}]  # fmt: skip
    promotion = Promotion.objects.create(
        source_env=stage,
        target_env=prod,
        repository=app.repository,
        state=PromotionState.APPROVED,
        gates=later,
        requested_gates=requested,
    )
    PromotionItem.objects.create(promotion=promotion, application=app, target_env=prod, active=False)
    client.force_login(user_with_role("viewer"))
    url = reverse("promotions:detail", args=[promotion.pk])
    assert "re-evaluated at PR time" in client.get(url).content.decode()  # open: the live evaluation
    Promotion.objects.filter(pk=promotion.pk).update(state=PromotionState.HEALTHY)
    html = client.get(url).content.decode()
    # Finished: what the requester saw first, then the later evaluation, labelled as such.
    assert html.index("Gates at request") < html.index("as requested")
    assert (
        html.index("as requested")
        < html.index("Gates last evaluation")
        < html.index("re-evaluated at PR time")
    )
    assert "data-gates-frozen" in html
    # The Argo CD apps of the target are linked from the promotion too.
    assert "/applications/argocd/svc-1-000-prod-eu" in html
