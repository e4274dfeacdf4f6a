"""Rollbacks run the secret scan (refused, nobody overrides) and show the zero-downtime checklist."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.models import Application
from rollbacks import rendered, services
from rollbacks.models import RollbackRequest
from tests.conftest import wait_for
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db
AWS_KEY = "AKIA" + "4OPQRSTUVWXYZ234"


def _request(sandbox, user) -> RollbackRequest:
    return services.rollback_request_create(
        actor=user,
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        reason="error rate above SLO after the last release",
    )


def test_rollback_records_the_checklist_and_a_clean_secret_scan(sandbox):
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team))
    names = {g["name"]: g for g in rollback.gates}
    assert names["secret_scan"]["passed"]
    checklist = [g for g in rollback.gates if g["name"].startswith("checklist.")]
    assert checklist and all(not g["blocking"] for g in checklist)


def test_a_rollback_that_brings_a_secret_back_is_refused_without_showing_it(sandbox, client):
    path = sandbox.env_file("prod")
    ws = sandbox.workspace()
    text = ws.read_file(path).decode()
    ws.write_file(path, text + f"# aws_access_key_id: {AWS_KEY}\n")
    ws.commit("oops", author_name="Dev", author_email="dev@example.com")
    ws.push("main")
    ws = sandbox.workspace()
    ws.create_branch("clean", ws.head())
    sandbox.set_tag(ws, "prod", "9.9.9")
    ws.write_file(path, ws.read_file(path).decode().replace(f"# aws_access_key_id: {AWS_KEY}\n", ""))
    ws.commit("Promote 9.9.9 and drop the key", author_name="Release", author_email="rm@example.com")
    ws.push("clean")
    pr = sandbox.client().create_pull_request(head="clean", base="main", title="Promote", body="")
    sandbox.merge(pr.number)
    merged = sandbox.head()

    def deployed() -> bool:
        # The emulator's sync operation advances with time: on a busy machine three reconciles may
        # not finish it, and "previous" would then be measured from the deployment before the merge.
        sandbox.converge()
        newest = sandbox.newest_deployment("prod")
        return newest is not None and newest.revision == merged

    wait_for(deployed, timeout=30, interval=0.3, message="the merge deployed to prod")

    user = oncall(sandbox.team)
    with pytest.raises(services.RollbackRefused) as refused:
        _request(sandbox, user)
    message = " ".join(refused.value.messages)
    assert f"{path} line" in message and "AWS Access Key" in message and AWS_KEY not in message
    assert not RollbackRequest.objects.exists()
    client.force_login(user)
    page = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"}).content.decode()
    assert "AWS Access Key" in page and "Nobody can override this gate" in page
    assert AWS_KEY not in page


def test_an_emergency_merge_is_refused_when_argo_cds_rendering_of_the_head_holds_a_secret(sandbox_auto_merge):
    import subprocess

    from tests.sandbox_fixtures import commit_files

    sandbox = sandbox_auto_merge
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        reason="error rate above SLO after the last release",
        emergency=True,
        emergency_justification="checkout down, SEV1",
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    # The branch's head renders a ConfigMap holding a key (a head the file-diff scan never saw).
    path = sandbox.env_file("prod")
    text = subprocess.run(
        ["git", "--git-dir", str(sandbox.bare), "show", f"{rollback.branch}:{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    leaked = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\ndata:\n  AWS_ACCESS_KEY_ID: {AWS_KEY}\n"
    )
    folder = path.rsplit("/", 1)[0]
    head = commit_files(
        sandbox.bare,
        {
            path: text.replace("resources:\n", "resources:\n  - leaked.yaml\n", 1),
            f"{folder}/leaked.yaml": leaked,
        },
        "more",
        branch=rollback.branch,
    )
    RollbackRequest.objects.filter(pk=rollback.pk).update(pushed_head_sha=head, pr_head_sha=head)

    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "failed" and not rollback.auto_merged_at
    assert "emergency merge refused: Secret scan" in rollback.failure_reason
    assert "ConfigMap" in rollback.failure_reason and "AWS Access Key" in rollback.failure_reason
    assert AWS_KEY not in rollback.failure_reason
    assert not sandbox.client().get_pull_request(rollback.pr_number).merged


def _emergency_rollback(sandbox) -> RollbackRequest:
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = services.rollback_request_create(
        actor=oncall(sandbox.team),
        application=Application.objects.get(name=sandbox.app),
        environment=sandbox.envs["prod"],
        mode="previous",
        reason="error rate above SLO after the last release",
        emergency=True,
        emergency_justification="checkout down, SEV1",
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    return rollback


def test_an_emergency_merge_is_refused_when_argo_cd_cannot_render_the_head(sandbox_auto_merge):
    """A rendering failure is a blocking gate for rollbacks too: the portal merges nothing Argo CD
    cannot render (Argo CD would not sync it either), and says why with Argo CD's message."""
    import subprocess

    from tests.sandbox_fixtures import commit_files

    sandbox = sandbox_auto_merge
    rollback = _emergency_rollback(sandbox)
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
    assert rollback.state == "failed" and not rollback.auto_merged_at
    assert "emergency merge refused: Argo CD cannot render" in rollback.failure_reason
    assert "missing.yaml" in rollback.failure_reason  # Argo CD's own message
    assert not sandbox.client().get_pull_request(rollback.pr_number).merged


def test_an_emergency_merge_waits_while_argo_cd_cannot_be_asked(sandbox_auto_merge):
    """Argo CD down (503, a timeout): no merge of an unrendered head; the next tracking tick asks again."""
    import requests
    from django.core.cache import cache

    from tests.rollbacks.sandbox_env import ARGO_TOKEN

    sandbox = sandbox_auto_merge
    rollback = _emergency_rollback(sandbox)

    def fault(**data):
        requests.post(
            f"{sandbox.argocd.base_url}/sandbox/faults",
            json=data,
            headers={"Authorization": f"Bearer {ARGO_TOKEN}"},
            timeout=10,
        ).raise_for_status()

    fault(error_rate=1.0, status=503, paths=["/api/v1/applications/*/manifests"])
    cache.clear()  # the PR body's rendering of this head is cached: as if it had expired
    # The portal's status at the PR opening judged the head already (kept per process): as if that
    # had run in another worker, this one asks Argo CD itself.
    rendered._JUDGED_HEADS.clear()
    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open" and not rollback.auto_merged_at
    assert "Argo CD cannot render" in rollback.tracking_detail and "503" in rollback.tracking_detail
    assert not sandbox.client().get_pull_request(rollback.pr_number).merged

    fault(error_rate=0.0)
    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert "Argo CD cannot render" not in rollback.tracking_detail


def _leak_on_the_branch(sandbox, rollback: RollbackRequest) -> str:
    """Someone's commit on the revert branch makes Argo CD render a ConfigMap holding a key."""
    import subprocess

    from tests.sandbox_fixtures import commit_files

    path = sandbox.env_file("prod")
    text = subprocess.run(
        ["git", "--git-dir", str(sandbox.bare), "show", f"{rollback.branch}:{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    leaked = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\ndata:\n  AWS_ACCESS_KEY_ID: {AWS_KEY}\n"
    )
    folder = path.rsplit("/", 1)[0]
    head = commit_files(
        sandbox.bare,
        {
            path: text.replace("resources:\n", "resources:\n  - leaked.yaml\n", 1),
            f"{folder}/leaked.yaml": leaked,
        },
        "more",
        branch=rollback.branch,
    )
    RollbackRequest.objects.filter(pk=rollback.pk).update(pushed_head_sha=head, pr_head_sha=head)
    return head


def test_a_rollback_whose_rendering_holds_a_secret_fails_and_its_pr_is_closed(sandbox, caplog):
    """Not only emergencies: the rendered diff of every rollback is scanned once its branch is pushed."""
    import json
    import logging

    from audit.models import AuditEvent

    caplog.set_level(logging.DEBUG)
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team))
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    _leak_on_the_branch(sandbox, rollback)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "failed"
    assert "Secret scan" in rollback.failure_reason and "AWS Access Key" in rollback.failure_reason
    assert "ConfigMap" in rollback.failure_reason and AWS_KEY not in rollback.failure_reason
    pull = sandbox.client().get_pull_request(rollback.pr_number)
    assert pull.state == "closed" and not pull.merged  # the secret leaves with the branch
    assert sandbox.head(rollback.branch) is None
    failed = AuditEvent.objects.get(action="rollback.failed", target_id=str(rollback.pk))
    assert "AWS Access Key" in failed.message
    assert AWS_KEY not in json.dumps(
        list(AuditEvent.objects.values("before", "after", "message")), default=str
    )
    assert AWS_KEY not in caplog.text


def test_the_baseline_allowlists_a_rollbacks_rendered_finding(sandbox):
    import hashlib
    import json

    from tests.sandbox_fixtures import commit_files

    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team))
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    baseline = {
        "version": "1.5.0",
        "results": {
            "somewhere/else.yaml": [
                {"type": "AWS Access Key", "hashed_secret": hashlib.sha1(AWS_KEY.encode()).hexdigest()}
            ]
        },
    }
    commit_files(sandbox.bare, {".secrets.baseline": json.dumps(baseline)}, "known false positive")
    _leak_on_the_branch(sandbox, rollback)

    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
