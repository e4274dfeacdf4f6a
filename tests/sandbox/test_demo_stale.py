"""The demo shows a stale app: an Argo CD instance that stopped answering keeps its last known state."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from inventory import models as inv
from inventory.poll import instance_poll
from tests.factories import user_with_role
from tests.inventory.test_pages_and_api import _seed

pytestmark = pytest.mark.django_db


def test_demo_seed_adds_one_stale_app_the_matrix_marks(client):
    _seed(2)
    call_command("demo_seed", "--stale-instance")
    call_command("demo_seed", "--stale-instance")  # idempotent
    edge = inv.ArgoInstance.objects.get(name="edge")
    assert list(edge.applications.values_list("name", flat=True)) == ["svc-2-001-dev-edge-1"]
    assert instance_poll(instance_id=edge.pk).error  # nothing answers there
    edge.refresh_from_db()
    assert edge.is_stale and edge.last_error

    client.force_login(user_with_role("viewer"))
    html = client.get(reverse("inventory:matrix")).content.decode()
    assert "Data from edge is stale since" in html
    assert '<span class="badge badge-idle">1 stale</span>' in html
    stale_cell = html.split('data-argo-app="svc-2-001-dev-edge-1"', 1)[1].split("</td>", 1)[0]
    assert '<span class="badge badge-idle">stale</span>' in stale_cell
    assert 'class="cell-item stale"' in html.split('data-argo-app="svc-2-001-dev-edge-1"', 1)[0][-80:]
