"""The promotion branch is pushed at request time; approvals bind to its head SHA (issue 16).

The approver reviews (and Argo CD renders) exactly the commit that will be merged: the branch is
on the forge before anyone approves, each approval records the head it was given on, and a branch
that moves off that head invalidates them (ledger event), blocking the promotion when the new
commit is not the portal's own.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from audit.models import AuditEvent, ChangeRecord
from changes.pullrequests import forge_for
from integrations.gitrepo import GitWorkspace
from promotions import services
from promotions.models import Approval, Promotion, PromotionState
from tests.promotions.helpers import FORGE_TOKEN, git, promotable_app

pytestmark = pytest.mark.django_db(transaction=True)
S = PromotionState
MALLORY_TOKEN = "mallory-token"


def _request(sandbox, users) -> Promotion:
    return services.promotion_request_create(
        actor=users["rm"],
        applications=[promotable_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )


def _actions(promotion: Promotion) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="promotion", target_id=str(promotion.pk))
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def _forge_head(sandbox, branch: str) -> str | None:
    return forge_for(sandbox.repository).get_branch_sha(branch)


def _push_as_someone_else(sandbox, tmp_path, branch: str) -> str:
    """Someone with push rights adds a commit of theirs to the portal's promotion branch."""
    sandbox.forge.users[MALLORY_TOKEN] = "mallory"
    ws = GitWorkspace.clone(
        sandbox.repository.url, tmp_path / "mallory", branch=branch, token=MALLORY_TOKEN, allow_http=True
    )
    ws.write_file("NOTES.md", "harmless, honest\n")
    sha = ws.commit("tidy up", author_name="Mallory", author_email="mallory@example.com")
    ws.push(branch)
    return sha


def test_the_request_pushes_the_branch_before_approval_and_the_pr_opens_from_that_commit(
    sandbox, users, purge_broker
):
    promotion = _request(sandbox, users)
    assert promotion.state == S.REQUESTED and not promotion.branch_pushed

    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"

    promotion.refresh_from_db()
    head = promotion.pushed_head_sha
    assert promotion.state == S.REQUESTED and promotion.branch_pushed_at is not None
    assert _forge_head(sandbox, promotion.pr_branch) == head
    assert git(sandbox.bare, "rev-parse", f"refs/heads/{promotion.pr_branch}").strip() == head
    assert git(sandbox.bare, "rev-parse", f"{head}^").strip() == promotion.pushed_base_sha
    assert sandbox.pulls() == []  # no PR before the approval
    pushed = AuditEvent.objects.get(action="promotion.branch_pushed", target_id=str(promotion.pk))
    assert pushed.after["head_sha"] == head and pushed.after["branch"] == promotion.pr_branch
    assert head in pushed.shas

    services.promotion_approve(
        promotion=promotion, actor=users["approver"], comment="reviewed", head_sha=head
    )
    approval = Approval.objects.get(promotion=promotion)
    assert approval.head_sha == head
    approved = AuditEvent.objects.get(action="promotion.approved", target_id=str(promotion.pk))
    assert approved.after["head_sha"] == head

    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"

    promotion.refresh_from_db()
    assert promotion.pr_head_sha == head == _forge_head(sandbox, promotion.pr_branch)
    assert [p["head_sha"] for p in sandbox.pulls()] == [head]
    assert _actions(promotion) == [
        "promotion.requested",
        "promotion.branch_pushed",
        "promotion.approved",
        "promotion.pr_opened",
    ]
    record = ChangeRecord.objects.get(source_type="promotion")
    assert record.approvers == ["alex"] and record.approved_head_sha == head


def test_retries_push_once_and_open_one_pr(sandbox, users, purge_broker):
    promotion = _request(sandbox, users)
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    head = promotion.pushed_head_sha
    # A redelivered message (or the sweeper) runs the push again: the branch is reused.
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "found"
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "not-claimed"  # approved now
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    # A crash after the PR was created but before it was recorded: the retry finds it.
    Promotion.objects.filter(pk=promotion.pk).update(state=S.PR_OPENING, pr_number=None)
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "found"
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "not-claimed"  # PR open now

    assert len(sandbox.pulls()) == 1
    assert _forge_head(sandbox, promotion.pr_branch) == head
    assert _actions(promotion).count("promotion.branch_pushed") == 1
    assert _actions(promotion).count("promotion.pr_opened") == 2  # opened, then found (not re-opened)
    assert AuditEvent.objects.filter(action="promotion.pr_opened", after__created=True).count() == 1


def test_approval_is_refused_while_the_branch_is_not_pushed(sandbox, users, purge_broker):
    promotion = _request(sandbox, users)
    with pytest.raises(services.PromotionRefused, match="not pushed yet"):
        services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert not Approval.objects.exists()
    services.promotion_branch_push(promotion_id=promotion.pk)
    with pytest.raises(services.PromotionRefused, match="that you reviewed"):
        services.promotion_approve(promotion=promotion, actor=users["approver"], head_sha="a" * 40)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    promotion.refresh_from_db()
    assert promotion.state == S.APPROVED


def test_someone_elses_commit_on_the_branch_invalidates_the_approvals_and_blocks_the_promotion(
    sandbox, users, purge_broker, tmp_path
):
    promotion = _request(sandbox, users)
    services.promotion_branch_push(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    reviewed = promotion.pushed_head_sha
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    foreign = _push_as_someone_else(sandbox, tmp_path, promotion.pr_branch)

    assert services.promotion_pr_open(promotion_id=promotion.pk) == "tampered"

    promotion.refresh_from_db()
    assert promotion.state == S.FAILED and "blocked as tampered" in promotion.failure_reason
    assert sandbox.pulls() == []  # nothing opened on someone else's commit
    assert Approval.objects.get(promotion=promotion).invalidated_at is not None
    moved = AuditEvent.objects.get(action="promotion.branch_moved", target_id=str(promotion.pk))
    assert moved.after["from_sha"] == reviewed and moved.after["to_sha"] == foreign
    assert moved.after["tampered"] is True and moved.after["approvals_invalidated"] == 1
    assert moved.message.startswith(
        f"1 approval(s) invalidated, branch moved from {reviewed[:12]} to {foreign[:12]}"
    )
    failed = AuditEvent.objects.get(action="promotion.failed", target_id=str(promotion.pk))
    assert failed.after["tampered"] is True
    # The branch holding the foreign commit is taken down with the promotion.
    assert services.promotion_close_pr(promotion_id=promotion.pk) == "closed"
    assert _forge_head(sandbox, promotion.pr_branch) is None


def test_a_pr_head_moved_after_opening_is_caught_by_tracking(sandbox, users, purge_broker, tmp_path):
    promotion = _request(sandbox, users)
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    services.promotion_pr_open(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    _push_as_someone_else(sandbox, tmp_path, promotion.pr_branch)

    assert services.promotion_track(promotion_id=promotion.pk) == S.FAILED

    promotion.refresh_from_db()
    assert "blocked as tampered" in promotion.failure_reason
    assert "promotion.branch_moved" in _actions(promotion)
    assert not Approval.objects.valid().filter(promotion=promotion).exists()


def test_a_lost_branch_is_pushed_again_as_the_same_commit(sandbox, users, purge_broker, tmp_path):
    promotion = _request(sandbox, users)
    services.promotion_branch_push(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    head = promotion.pushed_head_sha
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    forge_for(sandbox.repository).delete_branch(promotion.pr_branch)
    # Meanwhile the base moved on: the rebuild still starts from the recorded base commit.
    ws = GitWorkspace.clone(
        sandbox.repository.url, tmp_path / "other", branch="main", token=FORGE_TOKEN, allow_http=True
    )
    ws.write_file("docs/unrelated.md", "another change\n")
    ws.commit("unrelated change", author_name="Someone", author_email="someone@example.com")
    ws.push("main")

    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"

    promotion.refresh_from_db()
    assert promotion.pr_head_sha == head == promotion.pushed_head_sha  # rebuilt to the same SHA
    assert Approval.objects.approving(head).count() == 1  # still the approved commit
    pushes = AuditEvent.objects.filter(action="promotion.branch_pushed", target_id=str(promotion.pk))
    assert [e.after["head_sha"] for e in pushes] == [head, head]


def test_a_lost_branch_rebuilt_differently_goes_back_to_approval_on_the_new_head(
    sandbox, users, purge_broker
):
    promotion = _request(sandbox, users)
    services.promotion_branch_push(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    old = promotion.pushed_head_sha
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    forge_for(sandbox.repository).delete_branch(promotion.pr_branch)
    # The rebuild can no longer give the same commit (here: another commit date).
    Promotion.objects.filter(pk=promotion.pk).update(requested_at=promotion.requested_at - timedelta(hours=1))

    assert services.promotion_pr_open(promotion_id=promotion.pk) == "invalidated"

    promotion.refresh_from_db()
    assert promotion.state == S.REQUESTED and promotion.approved_at is None
    assert not promotion.pushed_head_sha and sandbox.pulls() == []
    moved = AuditEvent.objects.get(action="promotion.branch_moved", target_id=str(promotion.pk))
    assert moved.after["tampered"] is False and moved.after["from_sha"] == old
    assert moved.after["approvals_invalidated"] == 1
    # The push task (enqueued) pushes the new head; approvers decide again, on it.
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"
    promotion.refresh_from_db()
    new = promotion.pushed_head_sha
    assert new and new != old and _forge_head(sandbox, promotion.pr_branch) == new
    services.promotion_approve(promotion=promotion, actor=users["approver"], head_sha=new)
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    assert promotion.pr_head_sha == new
    assert [(a.head_sha, a.is_valid) for a in Approval.objects.filter(promotion=promotion)] == [
        (old, False),
        (new, True),
    ]


def test_a_push_after_an_approval_invalidates_it_and_the_page_and_ledger_say_so(
    client, sandbox, users, purge_broker, tmp_path
):
    """Two approvals needed: the first is given, then the branch moves; it no longer counts."""
    sandbox.prod.approvals_required = 2
    sandbox.prod.save(update_fields=["approvals_required"])
    promotion = _request(sandbox, users)
    services.promotion_branch_push(promotion_id=promotion.pk)
    promotion.refresh_from_db()
    reviewed = promotion.pushed_head_sha
    services.promotion_approve(promotion=promotion, actor=users["approver"], head_sha=reviewed)
    assert Approval.objects.valid().approving(reviewed).count() == 1
    recorded = AuditEvent.objects.get(action="promotion.approval_recorded", target_id=str(promotion.pk))
    assert recorded.after["head_sha"] == reviewed

    foreign = _push_as_someone_else(sandbox, tmp_path, promotion.pr_branch)
    # The push webhook sends this check; the forge's answer decides.
    assert services.promotion_branch_verify(promotion_id=promotion.pk) == "tampered"

    promotion.refresh_from_db()
    assert not Approval.objects.valid().filter(promotion=promotion).exists()  # no longer counts
    assert promotion.state == S.FAILED
    with pytest.raises(services.PromotionRefused):
        services.promotion_approve(promotion=promotion, actor=users["approver2"], head_sha=foreign)
    moved = AuditEvent.objects.get(action="promotion.branch_moved", target_id=str(promotion.pk))
    assert moved.after["approvals_invalidated"] == 1
    assert (moved.after["from_sha"], moved.after["to_sha"]) == (reviewed, foreign)

    client.force_login(users["viewer"])
    page = client.get(f"/promotions/{promotion.pk}/").content.decode()
    approvals = page[page.index("alex</strong>") :][:600]
    assert f'commit <code class="sha">{reviewed[:12]}</code>' in approvals
    assert '<span class="badge badge-warn">invalidated</span> the branch moved' in approvals
    assert "blocked as tampered" in page


def test_the_push_commits_on_the_portals_mirror_on_the_forges_base_head_without_a_clone(
    sandbox, users, purge_broker, tmp_path, monkeypatch
):
    promotion = _request(sandbox, users)
    # The base moves on after the request: the mirror lacks the new head until the push fetches it.
    other = GitWorkspace.clone(
        sandbox.repository.url, tmp_path / "other", branch="main", token=FORGE_TOKEN, allow_http=True
    )
    other.write_file("docs/unrelated.md", "another change\n")
    base = other.commit("unrelated change", author_name="Someone", author_email="someone@example.com")
    other.push("main")

    def no_clone(*args: object, **kwargs: object) -> GitWorkspace:
        raise AssertionError("the promotion push cloned the repository")

    monkeypatch.setattr(GitWorkspace, "clone", no_clone)
    assert services.promotion_branch_push(promotion_id=promotion.pk) == "pushed"

    promotion.refresh_from_db()
    head = promotion.pushed_head_sha
    assert _forge_head(sandbox, promotion.pr_branch) == head and promotion.branch_pushed_at is not None
    assert promotion.pushed_base_sha == base == git(sandbox.bare, "rev-parse", f"{head}^").strip()
    changed = git(sandbox.bare, "diff", "--name-only", base, head).split()
    assert changed == [promotion.items.get().paths[0]]
    assert promotion.items.get().version_after in git(sandbox.bare, "show", f"{head}:{changed[0]}")
    assert "Promotion-Id: " + str(promotion.pk) in git(sandbox.bare, "log", "-1", "--format=%B", head)
