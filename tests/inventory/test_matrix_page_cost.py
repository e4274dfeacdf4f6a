"""The matrix page's work per cell stays small: issue #18, figure 3 (50 apps, 300 cells per page).

A cell reads its Argo CD app as plain values: no ArgoApplication, Cluster, ArgoInstance or
Environment object per cell (a 50-app page built ~1,300 model objects and decoded ~1,100 JSON
columns before), and the fragments cells share are built once per page.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.signals import pre_init
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory import models as inv
from tests.factories import user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db

PER_CELL = (inv.ArgoApplication, inv.Cluster, inv.ArgoInstance, inv.Environment)


@contextmanager
def models_built() -> Iterator[Counter[type]]:
    built: Counter[type] = Counter()

    def count(sender: type, **_: object) -> None:
        built[sender] += 1

    pre_init.connect(count, weak=False)
    try:
        yield built
    finally:
        pre_init.disconnect(count)


def _page(client) -> tuple[str, Counter[type]]:
    with models_built() as built:
        response = client.get(reverse("inventory:matrix"))
    assert response.status_code == 200
    return response.content.decode(), built


def test_the_matrix_builds_no_model_object_per_cell(client):
    client.force_login(user_with_role("viewer"))
    _seed(4)
    html, small = _page(client)
    assert html.count('<div class="cell-item') == 12
    _seed(20)
    html, large = _page(client)
    assert html.count('<div class="cell-item') == 72
    # The instances list and the environments are read once per page, whatever the cells.
    assert small[inv.ArgoApplication] == large[inv.ArgoApplication] == 0
    assert small[inv.Cluster] == large[inv.Cluster] == 0
    for model in (inv.ArgoInstance, inv.Environment):
        assert large[model] == small[model] <= 3, (model, small[model], large[model])


def test_cells_deployed_at_the_same_time_render_it_alike(client):
    client.force_login(user_with_role("viewer"))
    _seed(2)
    app = inv.Application.objects.order_by("name").first()
    one, two, three = inv.ArgoApplication.objects.filter(application=app).order_by("name")
    inv.ArgoApplication.objects.filter(pk__in=[one.pk, two.pk]).update(
        deployed_at=timezone.now() - timedelta(hours=3)
    )
    html, _ = _page(client)
    times = [
        re.search(
            r"<time .*?</span>", html.split(f'data-argo-app="{name}">', 1)[1].split("</td>", 1)[0]
        ).group(0)
        for name in (one.name, two.name, three.name)
    ]
    assert times[0] == times[1] and "hours ago)</span>" in times[0], times
    assert times[2] != times[0] and three.deployed_at.isoformat(timespec="seconds") in times[2]  # its own


def test_the_grid_refresh_does_not_read_the_project_filter_choices(client):
    """The grid refreshes every 15 s (htmx) without the filter form: its project list is not read."""
    client.force_login(user_with_role("viewer"))
    _seed(3)

    def project_list_read(**headers: str) -> tuple[str, bool]:
        with CaptureQueriesContext(connection) as ctx:
            html = client.get(reverse("inventory:matrix"), **headers).content.decode()
        return html, any(
            'DISTINCT "inventory_application"."project"' in q["sql"] for q in ctx.captured_queries
        )

    page, read = project_list_read()
    assert read and '<option value="payments">payments</option>' in page
    grid, read = project_list_read(HTTP_HX_REQUEST="true")
    assert not read and 'id="matrix-grid"' in grid and "svc-3-002" in grid and "All projects" not in grid
