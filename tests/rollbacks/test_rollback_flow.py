"""Rollbacks against the sandbox: revert PRs on the forge, Argo CD converging back, guards."""

from __future__ import annotations

import re

import pytest
import requests
from django.urls import reverse

from audit.models import AuditEvent
from inventory.models import Application
from rollbacks import services
from rollbacks.models import RollbackRequest
from tests.rollbacks.sandbox_env import oncall

pytestmark = pytest.mark.django_db


def _actions(rollback: RollbackRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="rollback", target_id=str(rollback.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _request(
    sandbox, user, *, mode="previous", sha="", observed=None, confirm=False, **extra
) -> RollbackRequest:
    app = Application.objects.get(name=sandbox.app)
    return services.rollback_request_create(
        actor=user,
        application=app,
        environment=sandbox.envs["prod"],
        mode=mode,
        sha=sha,
        reason=extra.pop("reason", "error rate above SLO after the last release"),
        incident=extra.pop("incident", "INC-4711"),
        observed_deployment_id=observed,
        confirm_moved=confirm,
        **extra,
    )


def _tag_on(sandbox, ref: str) -> str:
    ws = sandbox.workspace(ref)
    text = ws.read_file(sandbox.env_file("prod")).decode()
    return re.search(r'newTag: "([^"]*)"', text).group(1)


def test_the_form_previews_commits_diff_and_the_version_afterwards(sandbox, client):
    version_a = sandbox.argo_apps()[0].version
    _, merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    assert {a.version for a in sandbox.argo_apps()} == {"9.9.9"}
    client.force_login(oncall(sandbox.team))

    page = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"})

    assert page.status_code == 200
    plan = page.context["plan"]
    assert plan.errors == []
    assert plan.revert_shas == [merge_sha]
    assert plan.commits[0].is_merge
    assert plan.current_version == "9.9.9"
    assert plan.expected_version == version_a
    assert '-    newTag: "9.9.9"' in plan.diff
    assert f'+    newTag: "{version_a}"' in plan.diff
    html = page.content.decode()
    assert merge_sha[:8] in html
    assert "Runs afterwards" in html and version_a in html
    assert f'name="observed_deployment" value="{plan.observed_deployment_id}"' in html

    # htmx: switching to "revert one commit" re-renders only the preview.
    partial = client.get(
        reverse("rollbacks:new"),
        {"app": sandbox.app, "env": "prod", "mode": "commit", "sha": merge_sha[:10]},
        HTTP_HX_REQUEST="true",
    )
    assert partial.status_code == 200
    fragment = partial.content.decode()
    assert "<html" not in fragment and "banner-bad" not in fragment
    assert merge_sha[:8] in fragment and 'name="observed_deployment"' in fragment


def test_reverting_a_merge_commit_opens_a_pr_with_the_revert(sandbox):
    version_a = sandbox.argo_apps()[0].version
    _number, merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)

    rollback = _request(sandbox, user, mode="commit", sha=merge_sha)
    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    assert re.fullmatch(rf"rollback/{sandbox.app}/prod/{rollback.pk}-[0-9a-f]{{8}}", rollback.branch)
    pulls = sandbox.pulls(rollback.branch)
    assert len(pulls) == 1
    pr = sandbox.client().get_pull_request(rollback.pr_number)
    assert pr.title.startswith("Revert")
    assert "rollback" in pr.labels
    assert merge_sha in pr.body and "INC-4711" in pr.body and f"/rollbacks/{rollback.pk}/" in pr.body
    assert pr.base_ref == "main"
    compare = sandbox.client().compare("main", rollback.branch)
    assert compare.ahead_by == 1
    assert compare.files == (sandbox.env_file("prod"),)
    assert _tag_on(sandbox, rollback.branch) == version_a
    assert _actions(rollback) == ["rollback.requested", "rollback.branch_pushed", "rollback.pr_opened"]
    pushed = AuditEvent.objects.get(action="rollback.branch_pushed", target_id=str(rollback.pk))
    assert pushed.after["head_sha"] == rollback.pushed_head_sha == pr.head_sha
    assert rollback.branch_pushed_at is not None and rollback.branch_pushed_at <= rollback.pr_opened_at


def test_a_retry_after_the_pr_was_opened_finds_it_instead_of_opening_another(sandbox):
    _, _merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team))
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    first = rollback.pr_number

    # The task ran again (e.g. redelivered) as if the first run had died before recording the PR.
    RollbackRequest.objects.filter(pk=rollback.pk).update(
        state="requested", pr_number=None, claimed_until=None
    )
    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.pr_number == first
    assert len(sandbox.pulls(rollback.branch)) == 1


def test_a_conflicting_revert_fails_with_the_files_and_pushes_nothing(sandbox):
    first = sandbox.commit_tag("prod", "9.9.9")
    sandbox.commit_tag("prod", "9.9.10")  # changes the same line again
    sandbox.converge()
    rollback = _request(sandbox, oncall(sandbox.team), mode="commit", sha=first)

    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "failed"
    assert rollback.conflict_files == [sandbox.env_file("prod")]
    assert "conflicts" in rollback.failure_reason and "nothing was pushed" in rollback.failure_reason
    assert sandbox.head(rollback.branch) is None
    assert sandbox.pulls(rollback.branch) == []
    assert _actions(rollback) == ["rollback.requested", "rollback.failed"]
    failed = AuditEvent.objects.get(
        target_type="rollback", target_id=str(rollback.pk), action="rollback.failed"
    )
    assert failed.after["conflict_files"] == [sandbox.env_file("prod")]


def test_shas_not_in_the_environments_history_are_refused(sandbox, client):
    user = oncall(sandbox.team)
    # A commit on a branch that was never merged, so never deployed.
    ws = sandbox.workspace()
    ws.create_branch("feature/unmerged", ws.head())
    sandbox.set_tag(ws, "prod", "6.6.6")
    unmerged = ws.commit("unmerged change", author_name="Dev", author_email="dev@example.com")
    ws.push("feature/unmerged")

    with pytest.raises(services.RollbackRefused, match="not in the history of what prod runs"):
        _request(sandbox, user, mode="commit", sha=unmerged)
    with pytest.raises(services.RollbackRefused, match="not in the repository"):
        _request(sandbox, user, mode="commit", sha="0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(services.RollbackRefused, match="hexadecimal"):
        _request(sandbox, user, mode="commit", sha="--upload-pack=evil")
    assert not RollbackRequest.objects.exists()

    client.force_login(user)
    page = client.post(
        reverse("rollbacks:new"),
        {"app": sandbox.app, "env": "prod", "mode": "commit", "sha": unmerged, "reason": "x"},
    )
    assert page.status_code == 400
    assert "not in the history of what prod runs" in page.content.decode()


def test_the_form_warns_when_the_environment_moved_on_since_it_was_opened(sandbox, client):
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    client.force_login(user)
    opened = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"}).context["plan"]
    sandbox.promote_by_pr("prod", "9.9.10", branch="promote/again")
    sandbox.converge()
    data = {
        "app": sandbox.app,
        "env": "prod",
        "mode": "previous",
        "reason": "bad release",
        "observed_deployment": opened.observed_deployment_id,
    }

    warned = client.post(reverse("rollbacks:new"), data)

    assert warned.status_code == 409
    assert "moved on since the form was opened" in warned.content.decode()
    assert not RollbackRequest.objects.exists()
    fresh = warned.context["plan"]
    assert fresh.current_version == "9.9.10"

    confirmed = client.post(
        reverse("rollbacks:new"),
        {**data, "observed_deployment": fresh.observed_deployment_id, "confirm_moved": "on"},
    )
    assert confirmed.status_code == 302
    rollback = RollbackRequest.objects.get()
    assert rollback.current_version == "9.9.10" and rollback.expected_version == "9.9.9"


def test_emergency_rollback_is_merged_by_the_portal_once_checks_pass(sandbox_auto_merge):
    sandbox = sandbox_auto_merge
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    rollback = _request(
        sandbox, oncall(sandbox.team), emergency=True, emergency_justification="checkout down, SEV1"
    )
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    status = {"repo": "acme/gitops", "sha": rollback.pr_head_sha, "context": "ci/validate"}
    requests.post(f"{sandbox.forge.base_url}/sandbox/checks", json={**status, "state": "pending"}, timeout=10)

    services.rollback_track(rollback_id=rollback.pk)
    rollback.refresh_from_db()
    assert rollback.state == "pr_open"
    assert "checks are still running" in rollback.tracking_detail

    requests.post(f"{sandbox.forge.base_url}/sandbox/checks", json={**status, "state": "success"}, timeout=10)
    services.rollback_track(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "merged"
    assert rollback.auto_merged_at is not None
    pr = sandbox.client().get_pull_request(rollback.pr_number)
    assert pr.merged
    # "Merged by" is the forge's word (the login of the portal's token), not a name the portal makes up.
    assert pr.merged_by and rollback.merged_by == pr.merged_by
    assert "rollback.auto_merged" in _actions(rollback)
    event = AuditEvent.objects.get(action="rollback.auto_merged", target_id=str(rollback.pk))
    assert event.after["justification"] == "checkout down, SEV1"


def test_emergency_needs_the_environment_to_allow_it_and_a_justification(sandbox):
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    with pytest.raises(services.RollbackRefused, match="not enabled for prod"):
        _request(sandbox, user, emergency=True, emergency_justification="now")


def test_cancel_closes_the_pr_and_deletes_the_branch(sandbox):
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    rollback = _request(sandbox, user)
    services.rollback_pr_open(rollback_id=rollback.pk)
    rollback.refresh_from_db()

    services.rollback_cancel(actor=user, rollback=rollback)

    rollback.refresh_from_db()
    assert rollback.state == "cancelled"
    assert sandbox.client().get_pull_request(rollback.pr_number).state == "closed"
    assert sandbox.head(rollback.branch) is None
    assert _actions(rollback)[-1] == "rollback.cancelled"


def test_a_second_rollback_of_the_same_app_and_env_is_refused_while_one_runs(sandbox):
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    first = _request(sandbox, user)
    with pytest.raises(services.RollbackRefused, match=f"rollback #{first.pk}"):
        _request(sandbox, user)


def test_the_api_requests_and_reports_a_rollback_like_the_browser(sandbox, client):
    from accounts.models import ApiToken, hash_token

    _, merge_sha = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    raw = ApiToken.generate()
    ApiToken.objects.create(user=oncall(sandbox.team), token_hash=hash_token(raw), last_four=raw[-4:])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    stale = sandbox.newest_deployment().pk - 1
    body = {"app": sandbox.app, "environment": "prod", "reason": "SLO burn", "incident": "INC-9"}

    moved = client.post(
        "/api/v1/rollbacks",
        {**body, "observed_deployment_id": stale},
        content_type="application/json",
        **auth,
    )
    assert moved.status_code == 409
    assert moved.json()["plan"]["commits"][0]["sha"] == merge_sha

    created = client.post(
        "/api/v1/rollbacks",
        {**body, "observed_deployment_id": stale, "confirm": True},
        content_type="application/json",
        **auth,
    )
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["state"] == "requested" and data["revert_shas"] == [merge_sha]
    assert data["expected_version"] and data["current_version"] == "9.9.9"

    services.rollback_pr_open(rollback_id=data["id"])
    got = client.get(f"/api/v1/rollbacks/{data['id']}", **auth).json()
    assert got["state"] == "pr_open" and got["pr_url"] and got["time_to_restore_seconds"] is None
    listed = client.get("/api/v1/rollbacks", **auth).json()["rollbacks"]
    assert [r["id"] for r in listed] == [data["id"]]
    requested = AuditEvent.objects.get(action="rollback.requested", target_id=str(data["id"]))
    assert requested.actor_type == "token"
    assert requested.after["confirmed_warnings"]


def test_the_list_page_filters_emergencies_for_after_the_fact_approval(sandbox_auto_merge, client):
    sandbox = sandbox_auto_merge
    sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)
    rollback = _request(sandbox, user, emergency=True, emergency_justification="SEV1")
    client.force_login(user)

    emergencies = client.get(reverse("rollbacks:list"), {"emergency": "1"})
    assert [r.pk for r in emergencies.context["rollbacks"]] == [rollback.pk]
    assert "emergency" in emergencies.content.decode()
    healthy_only = client.get(reverse("rollbacks:list"), {"state": "healthy"}, HTTP_HX_REQUEST="true")
    assert healthy_only.status_code == 200 and "No rollbacks match" in healthy_only.content.decode()


def _release_train_of_three(sandbox, apps: list[str], tag: str) -> str:
    """Merge one PR that changes the prod overlays of several apps; return the merge SHA."""
    ws = sandbox.workspace()
    ws.create_branch("release/train-42", ws.head())
    for app in apps:
        if app == sandbox.app:
            sandbox.set_tag(ws, "prod", tag)
        else:
            path = sandbox.env_file("prod", app)
            ws.write_file(path, ws.read_file(path).decode() + f"# release train 42: {app}\n")
    ws.commit("Release train 42", author_name="Release", author_email="rm@example.com")
    ws.push("release/train-42")
    pr = sandbox.client().create_pull_request(
        head="release/train-42", base="main", title="Release train 42", body=""
    )
    return sandbox.merge(pr.number)


def _git_diff(sandbox, base: str, head: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", f"--git-dir={sandbox.bare}", "diff", "--no-color", base, head],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_rolling_back_one_app_of_a_release_train_leaves_the_other_apps_untouched(sandbox, client):
    apps = sorted(Application.objects.values_list("name", flat=True))
    assert len(apps) == 3 and sandbox.app in apps
    version_a = sandbox.argo_apps()[0].version
    merge_sha = _release_train_of_three(sandbox, apps, "9.9.9")
    sandbox.converge()
    # On call for every project: the portal's scope refusal (rollback.refused) does not apply.
    user = oncall("*")
    client.force_login(user)

    page = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"})
    plan = page.context["plan"]
    assert plan.errors == [] and plan.revert_shas == [merge_sha]
    html = page.content.decode()
    assert f"Roll back {sandbox.app} in prod only" in html
    assert "stays as it is" in html
    rollback = _request(sandbox, user)
    services.rollback_pr_open(rollback_id=rollback.pk)

    rollback.refresh_from_db()
    assert rollback.state == "pr_open", rollback.failure_reason
    compare = sandbox.client().compare("main", rollback.branch)
    # Only this app's prod overlay differs from the base; the train's other apps keep their change.
    assert compare.files == (sandbox.env_file("prod"),)
    assert _tag_on(sandbox, rollback.branch) == version_a
    for other in apps:
        if other != sandbox.app:
            text = sandbox.workspace(rollback.branch).read_file(sandbox.env_file("prod", other)).decode()
            assert f"# release train 42: {other}" in text
    # The diff the form showed is exactly what the pull request contains.
    assert _git_diff(sandbox, "main", rollback.branch) == plan.diff
    pr = sandbox.client().get_pull_request(rollback.pr_number)
    assert pr.title.startswith("Revert") and f"{sandbox.app} only" in pr.title
    assert "stays as it is" in pr.body


def test_the_form_offers_the_deployment_history_and_rolls_back_to_the_chosen_one(sandbox, client):
    version_a = sandbox.argo_apps()[0].version
    _, first_merge = sandbox.promote_by_pr("prod", "9.9.8")
    sandbox.converge()
    _, second_merge = sandbox.promote_by_pr("prod", "9.9.9")
    sandbox.converge()
    client.force_login(oncall(sandbox.team))

    page = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod"})
    plan = page.context["plan"]
    versions = [t.version for t in plan.targets]
    assert versions[:2] == ["9.9.8", version_a]
    assert plan.expected_version == "9.9.8" and plan.revert_shas == [second_merge]
    html = page.content.decode()
    assert 'name="target"' in html and "9.9.8" in html and "by " in html
    # Emergency merge is off for this prod: the option is shown, disabled, with the reason.
    assert "Not available in prod" in html and 'id="id_emergency" disabled' in html

    older = next(t for t in plan.targets if t.version == version_a)
    chosen = client.get(
        reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod", "target": older.deployment_id}
    ).context["plan"]
    assert chosen.errors == []
    assert chosen.expected_version == version_a
    assert chosen.revert_shas == [second_merge, first_merge]

    user = oncall(sandbox.team, username="oncall2")
    rollback = _request(sandbox, user, target_deployment_id=older.deployment_id)
    assert rollback.expected_version == version_a and rollback.revert_shas == [second_merge, first_merge]
    assert rollback.target_revision == older.revision

    bogus = client.get(reverse("rollbacks:new"), {"app": sandbox.app, "env": "prod", "target": "999999"})
    assert bogus.context["plan"].errors


def test_new_rollback_is_offered_on_the_list_to_on_call_only(sandbox, client):
    from tests.factories import user_with_role

    client.force_login(user_with_role("viewer", "vic"))
    assert "New rollback" not in client.get(reverse("rollbacks:list")).content.decode()
    client.force_login(oncall(sandbox.team))
    html = client.get(reverse("rollbacks:list")).content.decode()
    assert "New rollback" in html and f'<option value="{sandbox.app}">' in html
    assert 'action="/rollbacks/new/"' in html


def _release_train(sandbox, other: str, tag: str) -> str:
    """Merge one PR that changes the prod tags of the sandbox app and `other`; return the merge SHA."""
    branch = f"release/train-{tag}"
    ws = sandbox.workspace()
    ws.create_branch(branch, ws.head())
    sandbox.set_tag(ws, "prod", tag)
    other_file = sandbox.env_file("prod", other)
    ws.write_file(other_file, ws.read_file(other_file).decode() + f"# release train {tag}\n")
    ws.commit(f"Release train {tag}", author_name="Release", author_email="rm@example.com")
    ws.push(branch)
    pr = sandbox.client().create_pull_request(head=branch, base="main", title=f"Train {tag}", body="")
    return sandbox.merge(pr.number)


def test_a_revert_touching_another_projects_app_is_refused_not_warned(sandbox):
    other = next(a for a in Application.objects.exclude(name=sandbox.app).order_by("name") if a.repository_id)
    Application.objects.filter(pk=other.pk).update(project="another-team")
    merge_sha = _release_train(sandbox, other.name, "9.9.9")
    sandbox.converge()
    user = oncall(sandbox.team)

    with pytest.raises(services.RollbackRefused, match="may not roll back") as refused:
        _request(sandbox, user, mode="commit", sha=merge_sha)

    assert other.name in str(refused.value) and "prod" in str(refused.value)
    assert not RollbackRequest.objects.exists()
    event = AuditEvent.objects.get(action="rollback.refused")
    assert event.app == sandbox.app and event.after["outside"][0].startswith(f"{other.name} in prod")
    assert event.actor_name == user.username

    # Someone on call for both projects may revert the whole train (the change is still shown).
    both = oncall("*", username="oncall-both")
    rollback = _request(sandbox, both, mode="commit", sha=merge_sha)
    assert rollback.state == "requested"
