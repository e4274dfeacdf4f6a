"""The emergency auto-merge uses the one checks verdict (issue 17): a failed required check blocks it."""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from audit.models import AuditEvent
from rollbacks import services
from tests.changes.test_pr_trust import _emergency
from tests.factories import UserFactory
from tests.rollbacks.sandbox_env import NAME, OWNER

pytestmark = pytest.mark.django_db
RUN = "https://ci.example/validate/99"


def _status(box, sha: str, state: str) -> None:
    check = {
        "repo": f"{OWNER}/{NAME}",
        "sha": sha,
        "context": "ci/validate",
        "state": state,
        "target_url": RUN,
    }
    assert requests.post(f"{box.forge.base_url}/sandbox/checks", json=check, timeout=10).status_code < 300


def test_a_failed_required_check_blocks_the_emergency_merge_and_links_the_run(sandbox_auto_merge, client):
    box = sandbox_auto_merge
    box.envs["prod"].required_checks = ["ci/validate"]
    box.envs["prod"].save(update_fields=["required_checks"])
    rollback = _emergency(box)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    _status(box, rollback.pr_head_sha, "failure")

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open" and rollback.checks_verdict == "checks_failed"
    assert "CI failed: ci/validate" in rollback.tracking_detail
    assert not box.client().get_pull_request(rollback.pr_number).merged
    event = AuditEvent.objects.get(action="rollback.checks_failed", target_id=str(rollback.pk))
    assert event.after["failing"] == [{"name": "ci/validate", "state": "failure", "url": RUN}]

    client.force_login(UserFactory(username="vera", roles=["viewer"]))
    html = client.get(reverse("rollbacks:checks", args=[rollback.pk])).content.decode()
    assert f'href="{RUN}"' in html and "data-checks-failed" in html
    assert "CI failed: ci/validate" in client.get(reverse("rollbacks:list")).content.decode()
    detail = client.get(reverse("rollbacks:detail", args=[rollback.pk])).content.decode()
    assert 'id="checks"' in detail and "data-checks-badge" in detail

    # A re-run passes: the portal merges, after recording that the checks passed.
    _status(box, rollback.pr_head_sha, "success")
    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "merged"
    actions = list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions.index("rollback.checks_passed") < actions.index("rollback.auto_merged")
