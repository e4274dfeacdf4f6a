"""The portal acts only on its own pull requests and branches (issue 15), against the sandbox forge.

Scenario: an insider who can push branches (but not merge to the protected base) or someone who
can fork opens a PR on the rollback's branch name with a manifest of their choice; on-call asks
for an emergency rollback; the worker must neither adopt, label nor merge that PR.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEvent
from changes.sweeper import change_sweep
from integrations.forges import forge_client
from integrations.gitrepo import GitWorkspace
from inventory.models import Application
from rollbacks import services
from rollbacks import tasks as rollback_tasks
from rollbacks.kind import ROLLBACK
from rollbacks.models import RollbackRequest
from tests.rollbacks.sandbox_env import NAME, OWNER, oncall

pytestmark = pytest.mark.django_db

MALLORY_TOKEN = "mallory-token"
EVIL = 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: x\n    newTag: "evil"\n'


def _actions(rollback: RollbackRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _emergency(box) -> RollbackRequest:
    box.promote_by_pr("prod", "9.9.9")
    box.converge()
    return services.rollback_request_create(
        actor=oncall(box.team),
        application=Application.objects.get(name=box.app),
        environment=box.envs["prod"],
        mode="previous",
        sha="",
        reason="error rate above SLO after the last release",
        incident="INC-4711",
        observed_deployment_id=None,
        confirm_moved=False,
        emergency=True,
        emergency_justification="checkout down, SEV1",
    )


def _mallory(box):
    """An insider with push rights on the repository, acting with their own forge token."""
    box.forge.users[MALLORY_TOKEN] = "mallory"
    return forge_client("github", box.forge.base_url, MALLORY_TOKEN, f"{OWNER}/{NAME}", allow_http=True)


def _push_as_mallory(box, branch: str, *, start: str = "main") -> str:
    box._ws_count += 1
    ws = GitWorkspace.clone(
        box.clone_url,
        box.tmp / f"mallory-{box._ws_count}",
        branch=start,
        token=MALLORY_TOKEN,
        allow_http=True,
    )
    if start != branch:
        ws.create_branch(branch, ws.head())
    ws.write_file(box.env_file("prod"), EVIL.encode())
    sha = ws.commit("innocent-looking change", author_name="Mallory", author_email="mallory@example.com")
    ws.push(branch)
    return sha


def _pass_checks(box, sha: str) -> None:
    status = {"repo": f"{OWNER}/{NAME}", "sha": sha, "context": "ci/validate", "state": "success"}
    resp = requests.post(f"{box.forge.base_url}/sandbox/checks", json=status, timeout=10)
    assert resp.status_code < 300, resp.text


def test_a_pr_someone_else_opened_on_the_branch_name_is_never_adopted_nor_merged(sandbox_auto_merge):
    box = sandbox_auto_merge
    rollback = _emergency(box)
    mallory = _mallory(box)
    # Mallory knows the branch name (predictable before; here read from the row, as if leaked).
    evil_sha = _push_as_mallory(box, rollback.branch)
    evil = mallory.create_pull_request(head=rollback.branch, base="main", title="Revert", body="")
    _pass_checks(box, evil_sha)

    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    assert rollback.pr_number != evil.number
    assert rollback.pr_head_sha == rollback.pushed_head_sha != evil_sha
    assert re.fullmatch(rf"rollback/{box.app}/prod/{rollback.pk}-[0-9a-f]{{8}}", rollback.branch)
    assert "rollback.branch_replaced" in _actions(rollback)
    replaced = AuditEvent.objects.get(action="rollback.branch_replaced", target_id=str(rollback.pk))
    assert f"PR #{evil.number}" in replaced.after["reason"]
    untouched = box.client().get_pull_request(evil.number)
    assert untouched.state == "open" and "rollback" not in untouched.labels

    _pass_checks(box, rollback.pr_head_sha)
    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "merged"
    assert box.client().get_pull_request(rollback.pr_number).merged
    assert not box.client().get_pull_request(evil.number).merged


def test_a_branch_someone_else_pushed_is_not_reused(sandbox_auto_merge):
    sandbox = sandbox_auto_merge
    rollback = _emergency(sandbox)
    _mallory(sandbox)
    evil_sha = _push_as_mallory(sandbox, rollback.branch)
    old_branch = rollback.branch

    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    assert rollback.branch != old_branch and rollback.pr_head_sha != evil_sha
    pr = sandbox.client().get_pull_request(rollback.pr_number)
    assert pr.head_ref == rollback.branch and pr.head_sha == rollback.pushed_head_sha
    event = AuditEvent.objects.get(action="rollback.branch_replaced", target_id=str(rollback.pk))
    assert event.before == {"branch": old_branch} and event.after["branch"] == rollback.branch
    assert "not at a commit the portal pushed" in event.after["reason"]


def test_a_retry_reuses_the_branch_the_portal_pushed(sandbox_auto_merge):
    sandbox = sandbox_auto_merge
    rollback = _emergency(sandbox)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    first = (rollback.branch, rollback.pr_number, rollback.pushed_head_sha)
    # A retry after a crash between the push and recording the PR: the row goes back to requested.
    RollbackRequest.objects.filter(pk=rollback.pk).update(state="requested", pr_number=None)

    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert (rollback.branch, rollback.pr_number, rollback.pushed_head_sha) == first
    assert "rollback.branch_replaced" not in _actions(rollback)


def test_the_emergency_merge_refuses_a_head_that_moved(sandbox_auto_merge):
    box = sandbox_auto_merge
    rollback = _emergency(box)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    _mallory(box)
    # Mallory adds a commit to the portal's own PR branch and makes the checks pass on it.
    moved = _push_as_mallory(box, rollback.branch, start=rollback.branch)
    _pass_checks(box, moved)
    _pass_checks(box, rollback.pushed_head_sha)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "failed"
    assert "emergency merge refused" in rollback.failure_reason
    assert not box.client().get_pull_request(rollback.pr_number).merged
    event = AuditEvent.objects.get(action="rollback.failed", target_id=str(rollback.pk))
    assert event.after["merge_refused"] is True


def test_the_emergency_merge_never_counts_no_checks_as_passing(sandbox_auto_merge):
    box = sandbox_auto_merge
    rollback = _emergency(box)
    services.rollback_pr_open(rollback_id=rollback.pk)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open"
    assert "none reported" in rollback.tracking_detail
    assert not box.client().get_pull_request(rollback.pr_number).merged


def test_the_emergency_merge_waits_for_the_checks_the_environment_names(sandbox_auto_merge):
    box = sandbox_auto_merge
    box.envs["prod"].required_checks = ["ci/validate", "policy"]
    box.envs["prod"].save(update_fields=["required_checks"])
    rollback = _emergency(box)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    _pass_checks(box, rollback.pr_head_sha)

    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open"
    assert "waiting for required checks: policy" in rollback.tracking_detail

    status = {"repo": f"{OWNER}/{NAME}", "sha": rollback.pr_head_sha, "context": "policy", "state": "success"}
    requests.post(f"{box.forge.base_url}/sandbox/checks", json=status, timeout=10)
    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "merged"


def test_a_long_retry_after_is_scheduled_on_the_row_not_slept(sandbox_auto_merge):
    sandbox = sandbox_auto_merge
    rollback = _emergency(sandbox)
    fault = {
        "paths": ["/pulls"],
        "methods": ["POST"],
        "secondary_rate_limit": {"retry_after": 900, "status": 429},
    }
    assert requests.post(f"{sandbox.forge.base_url}/sandbox/faults", json=fault, timeout=10).ok
    started = time.monotonic()

    rollback_tasks.rollback_pr_open_task.apply(args=(rollback.pk,))

    assert time.monotonic() - started < 60  # no sleep, no in-task retry countdown
    rollback.refresh_from_db()
    assert rollback.state == "requested" and rollback.claimed_until is None
    wait = (rollback.next_attempt_at - timezone.now()).total_seconds()
    assert 850 < wait <= 900
    assert change_sweep(kind=ROLLBACK, now=timezone.now() + timedelta(seconds=600))["reopened"] == 0
    due = rollback.next_attempt_at + timedelta(seconds=1)
    assert change_sweep(kind=ROLLBACK, now=due)["reopened"] == 1
