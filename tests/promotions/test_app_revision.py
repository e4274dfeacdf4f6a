"""The promotion preview and its records keep the app's revision; only carried commits are listed."""

from __future__ import annotations

import re

import pytest

from inventory.ingest import repository_ingest
from inventory.models import Commit
from promotions import observed, services
from promotions.models import PromotionItem
from tests.conftest import wait_for
from tests.promotions.helpers import promotable_app
from tests.sandbox_fixtures import commit_files, read_file

pytestmark = pytest.mark.django_db(transaction=True)


def _stage_only_change(sandbox, app: str) -> str:
    """Change a stage-only setting of `app` (its log level) beside the image pin; return the SHA."""
    path = f"environments/stage/{app}/kustomization.yaml"
    text = read_file(sandbox.bare, path)
    level = re.search(r"LOG_LEVEL=(\w+)", text).group(1)
    other = "debug" if level != "debug" else "warn"
    return commit_files(
        sandbox.bare, {path: text.replace(f"LOG_LEVEL={level}", f"LOG_LEVEL={other}")}, f"Log {other}\n"
    )


def _other_app_change(sandbox, other: str) -> str:
    path = f"environments/dev/{other}/kustomization.yaml"
    text = read_file(sandbox.bare, path)
    return commit_files(sandbox.bare, {path: text + "# touched\n"}, f"Touch {other} in dev\n")


def test_preview_and_records_keep_the_apps_revision_and_list_only_carried_commits(sandbox, users):
    app = promotable_app(sandbox)
    other = next(a.name for a in sandbox.generated.apps if a.name != app.name)
    own = _stage_only_change(sandbox, app.name)
    head = _other_app_change(sandbox, other)
    sandbox.reconcile()
    wait_for(
        lambda: (
            observed.env_state(app, sandbox.stage).revision == head
            and observed.env_state(app, sandbox.stage).synced
        ),
        timeout=20,
        message="stage synced at the head",
    )
    sandbox.poll()
    repository_ingest(repository_id=sandbox.repository.pk)
    assert Commit.objects.filter(sha=head).exists()

    preview = services.promotion_preview(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    item = preview.items[0]
    # Argo CD reports the head (a commit to another app); the app's revision is its own last change.
    assert item.revision.argo == head
    assert item.source_revision == own
    # The stage-only log level never reaches prod: not listed; the image bumps that do reach it are.
    shas = [c.sha for c in item.commits]
    assert own not in shas and shas, shas
    assert all("Bump" in c.subject or "Promote" in c.subject for c in item.commits), [
        c.subject for c in item.commits
    ]

    promotion = services.promotion_request_create(
        actor=users["rm"], applications=[app], source_env=sandbox.stage, target_env=sandbox.prod
    )
    stored = PromotionItem.objects.get(promotion=promotion)
    assert stored.source_revision == own
    assert stored.target_revision_before and stored.target_revision_before != head
    assert own not in [c["sha"] for c in stored.commits]


def test_a_version_is_pinned_only_as_a_whole_value():
    from promotions.gitops import _pinned

    assert _pinned("3.2.1", 'newTag: "3.2.1"\n') and _pinned("3.2.1", "newTag: 3.2.1\n")
    assert not _pinned("3.2.1", 'newTag: "3.2.12"\n') and not _pinned("1.2", 'newTag: "11.2"\n')
    assert _pinned("sha256:" + "a" * 64, "digest: sha256:" + "a" * 64 + "\n")
