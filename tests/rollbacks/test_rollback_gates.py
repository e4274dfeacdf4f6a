"""Rollbacks run the secret scan (refused, nobody overrides) and show the zero-downtime checklist."""

from __future__ import annotations

import pytest
from django.urls import reverse

from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest
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
    sandbox.converge()

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
