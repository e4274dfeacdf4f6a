"""The portal's own commit status on a rollback's revert head (real sandbox forge and Argo CD).

The gap it closes: a normal (non-emergency) rollback whose revert Argo CD cannot render showed a
failing gate on the portal and in the PR body, yet a person could merge it on the forge. Now the
portal's `gitops-portal/gates` status on the head fails, which branch protection requires.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import requests

from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest
from tests.rollbacks.sandbox_env import FORGE_TOKEN, oncall
from tests.rollbacks.test_rollback_gates import _leak_on_the_branch
from tests.sandbox_fixtures import commit_files

CONTEXT = "gitops-portal/gates"


def _statuses(sandbox, sha: str) -> list[dict[str, Any]]:
    resp = requests.get(
        f"{sandbox.forge.base_url}/repos/acme/gitops/commits/{sha}/statuses",
        headers={"Authorization": f"Bearer {FORGE_TOKEN}"},
        timeout=10,
    )
    resp.raise_for_status()
    return [s for s in resp.json() if s["context"] == CONTEXT]


def _opened(sandbox) -> RollbackRequest:
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        reason="error rate above SLO after the last release",
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    return rollback


@pytest.mark.django_db
def test_a_clean_revert_gets_success_on_its_head_once(sandbox, client):
    rollback = _opened(sandbox)
    head = rollback.pr_head_sha
    requester = rollback.requested_by

    (success,) = _statuses(sandbox, head)
    assert success["state"] == "success" and "rendering of the revert passed" in success["description"]
    assert success["target_url"] == f"http://portal.test/rollbacks/{rollback.pk}/"
    services.rollback_track(rollback_id=rollback.pk)
    services.rollback_track(rollback_id=rollback.pk)
    assert len(_statuses(sandbox, head)) == 1

    client.force_login(requester)
    html = client.get(f"/rollbacks/{rollback.pk}/").content.decode()
    assert 'data-portal-status="success"' in html


@pytest.mark.django_db
def test_a_normal_rollback_argo_cd_cannot_render_fails_the_portal_status(sandbox):
    rollback = _opened(sandbox)
    path = sandbox.env_file("prod")
    text = subprocess.run(
        ["git", "--git-dir", str(sandbox.bare), "show", f"{rollback.branch}:{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    broken = text.replace("resources:\n", "resources:\n  - missing.yaml\n", 1)
    head = commit_files(sandbox.bare, {path: broken}, "break it", branch=rollback.branch)
    RollbackRequest.objects.filter(pk=rollback.pk).update(pushed_head_sha=head, pr_head_sha=head)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open"  # a person may still fix the branch; the forge may not merge it
    (failure,) = _statuses(sandbox, head)
    assert failure["state"] == "failure"
    assert (
        failure["description"].startswith("Blocked: Argo CD cannot render")
        and len(failure["description"]) <= 140
    )
    assert rollback.portal_status_state == "failure" and rollback.portal_status_sha == head


@pytest.mark.django_db
def test_a_revert_head_holding_a_secret_fails_the_portal_status(sandbox):
    rollback = _opened(sandbox)
    head = _leak_on_the_branch(sandbox, rollback)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "failed"
    (failure,) = _statuses(sandbox, head)
    assert failure["state"] == "failure" and "Secret scan" in failure["description"]
    assert "AKIA" not in failure["description"]  # the secret itself is never posted
