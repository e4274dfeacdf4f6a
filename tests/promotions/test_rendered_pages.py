"""The rendered diff on promotion pages, from the sandbox Argo CD: kustomize and Helm-values apps."""

from __future__ import annotations

import pytest

from promotions import services
from promotions.models import Promotion
from tests.promotions.helpers import promotable_app

pytestmark = pytest.mark.django_db(transaction=True)


def _requested_and_pushed(sandbox, users, app) -> Promotion:
    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    services.promotion_approve(promotion=promotion, actor=users["approver"], comment="ok")
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pushed_head_sha or promotion.pr_head_sha
    return promotion


def test_detail_page_lazy_loads_the_rendered_diff_of_a_new_tag(client, sandbox, users, purge_broker):
    app = promotable_app(sandbox)
    promotion = _requested_and_pushed(sandbox, users, app)
    client.force_login(users["viewer"])
    page = client.get(f"/promotions/{promotion.pk}/").content.decode()
    assert f'hx-get="/promotions/{promotion.pk}/rendered/"' in page
    html = client.get(f"/promotions/{promotion.pk}/rendered/", HTTP_HX_REQUEST="true").content.decode()
    print(html)
    assert "<html" not in html
    assert "Rendered by Argo CD" in html and "data-render-error" not in html
    assert 'data-object-change="changed"' in html
    item = promotion.items.get()
    new_tag = item.version_after.rsplit(":", 1)[-1].rsplit("@", 1)[-1]
    assert f'<span class="add">+        image: registry.example.com/acme/{app.name}' in html
    assert new_tag in html
    assert "<code>Deployment.apps " in html
    assert "data-sync-order" in html
